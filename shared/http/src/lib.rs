//! The HTTP API and the web page: one axum [`Router`] for every host.
//!
//! `twin serve` serves it with a tokio listener, the `api` Lambda function will serve it through
//! `lambda_http`, and the tests drive it in-process with `oneshot`. The routes are DESIGN.md's
//! HTTP API table (also served as an OpenAPI document at `/v1/openapi.json`); the page at `/`
//! is plain HTML, CSS and JavaScript compiled into the binary. Handlers only translate: the
//! work is [`System`]'s, called on tokio's blocking pool, and every failure becomes a response
//! in one place ([`error::ApiError`]). Writes need the API key ([`auth`]); bodies are read
//! under limits ([`body`]). Logs carry the method, the route template, the status and the
//! time taken: never a body, a name in a path, an image or an embedding.

pub mod auth;
pub mod body;
pub mod error;
mod page;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use twin_core::keys;
use twin_core::store::UploadSigner;
use twin_app::system::{System, SystemError};
use auth::WriteAccess;
use error::ApiError;

/// Environment variable holding the API key writes need.
pub const API_KEY_ENV: &str = "TWIN_API_KEY";
/// Largest photo `/v1/match` takes (the system's limit).
pub const MAX_PHOTO_BYTES: usize = twin_app::system::MAX_PHOTO_BYTES;
/// Largest enrollment video (the system's limit).
pub const MAX_VIDEO_BYTES: usize = twin_app::system::MAX_VIDEO_BYTES;
/// Lookalikes per face unless `?k=` says otherwise.
pub const DEFAULT_K: usize = 5;
/// Most lookalikes per face a caller may ask for.
pub const MAX_K: usize = twin_app::system::MAX_K;
/// Identities per gallery page unless `?limit=` says otherwise.
pub const DEFAULT_PAGE: usize = 50;
/// Largest gallery page.
pub const MAX_PAGE: usize = 200;
/// Room for a multipart form's boundaries and headers around the photo.
const FORM_OVERHEAD: usize = 64 * 1024;

/// How the router behaves (beyond what the [`System`] does).
#[derive(Clone)]
pub struct HttpConfig {
    /// Hands out presigned uploads (S3): enrollments then `PUT` their video straight to the
    /// bucket, whose upload event starts ingest. `None`: uploads come to this server.
    pub signer: Option<Arc<dyn UploadSigner>>,
    /// The key writes need; `None` refuses writes unless `allow_writes_without_key`.
    pub api_key: Option<String>,
    /// Accept writes without a key when none is configured (a trusted machine only).
    pub allow_writes_without_key: bool,
    /// Largest photo, in bytes (413 above).
    pub max_photo_bytes: usize,
    /// Largest enrollment video, in bytes (413 above).
    pub max_video_bytes: usize,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("signer", &self.signer.is_some())
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("allow_writes_without_key", &self.allow_writes_without_key)
            .field("max_photo_bytes", &self.max_photo_bytes)
            .field("max_video_bytes", &self.max_video_bytes)
            .finish()
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            signer: None,
            api_key: None,
            allow_writes_without_key: false,
            max_photo_bytes: MAX_PHOTO_BYTES,
            max_video_bytes: MAX_VIDEO_BYTES,
        }
    }
}

impl HttpConfig {
    /// The defaults, with the API key from `TWIN_API_KEY` (an empty value is no key).
    pub fn from_env() -> Self {
        HttpConfig {
            api_key: std::env::var(API_KEY_ENV)
                .ok()
                .filter(|k| !k.trim().is_empty()),
            ..HttpConfig::default()
        }
    }
}

/// What every handler gets: the system and the configuration.
#[derive(Clone)]
pub struct AppState {
    system: Arc<System>,
    config: Arc<HttpConfig>,
}

/// The router with [`HttpConfig::from_env`]: the API key from `TWIN_API_KEY`, writes refused
/// when there is none.
pub fn router(system: Arc<System>) -> Router {
    router_with(system, HttpConfig::from_env())
}

/// The router with an explicit configuration.
pub fn router_with(system: Arc<System>, config: HttpConfig) -> Router {
    let photo_limit = config.max_photo_bytes + FORM_OVERHEAD;
    let origin = config.signer.as_ref().and_then(|s| s.upload_origin());
    let csp = HeaderValue::from_str(&page::page_csp(origin.as_deref()))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    let state = AppState {
        system,
        config: Arc::new(config),
    };
    Router::new()
        .route("/", get(move || async move { page::index(&csp) }))
        .route("/app.js", get(page::script))
        .route("/style.css", get(page::style))
        .route("/favicon.svg", get(page::favicon))
        .route(
            "/v1/match",
            post(match_photo).layer(DefaultBodyLimit::max(photo_limit)),
        )
        .route("/v1/enrollments", post(create_enrollment))
        .route("/v1/enrollments/{upload_id}", get(enrollment_status))
        .route("/v1/uploads/{upload_id}", put(upload))
        .route("/v1/identities", get(identities))
        .route(
            "/v1/identities/{slug}",
            get(identity).delete(delete_identity),
        )
        .route("/v1/crops/{slug}/{upload_id}/{file}", get(crop))
        .route("/v1/models", get(models))
        .route("/v1/models/{version}/promote", post(promote_model))
        .route("/v1/openapi.json", get(page::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// The picture URL of a crop key (`crops/…` → `/v1/crops/…`).
pub fn crop_url(key: &str) -> Option<String> {
    key.strip_prefix("crops/")
        .map(|rest| format!("/v1/crops/{rest}"))
}

// ---------------------------------------------------------------------------------------------
// Extractors whose rejections are ApiErrors.

/// `Path` with JSON errors.
struct ApiPath<T>(T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let axum::extract::Path(v) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(v))
    }
}

/// `Query` with JSON errors.
struct ApiQuery<T>(T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let axum::extract::Query(v) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(v))
    }
}

/// `Json` with JSON errors.
struct ApiJson<T>(T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(v) = Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(v))
    }
}

/// Runs a blocking system call on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, SystemError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format_args!("system call failed: {e}"))),
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(format_args!("serialising: {e}")))
}

/// Adds `<field>_url` beside every field `field` that holds a crop key (or `<field>_urls`
/// beside an array of them), at any depth.
fn add_picture_urls(v: &mut Value, field: &str) {
    match v {
        Value::Object(map) => {
            let url = match map.get(field) {
                Some(Value::String(k)) => {
                    crop_url(k).map(|u| (format!("{field}_url"), Value::String(u)))
                }
                Some(Value::Array(keys)) => Some((
                    format!("{}_urls", field.trim_end_matches('s')),
                    keys.iter()
                        .filter_map(Value::as_str)
                        .filter_map(crop_url)
                        .map(Value::String)
                        .collect(),
                )),
                _ => None,
            };
            for child in map.values_mut() {
                add_picture_urls(child, field);
            }
            if let Some((name, url)) = url {
                map.insert(name, url);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|x| add_picture_urls(x, field)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers.

#[derive(Deserialize)]
struct MatchQuery {
    k: Option<usize>,
}

/// `POST /v1/match`: a photo → its faces and, for each, the closest identities.
async fn match_photo(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<MatchQuery>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let k = q.k.unwrap_or(DEFAULT_K);
    if !(1..=MAX_K).contains(&k) {
        return Err(ApiError::bad_request(format!(
            "k must be between 1 and {MAX_K}"
        )));
    }
    let photo = body::photo(req, st.config.max_photo_bytes).await?;
    let system = st.system.clone();
    let found = blocking(move || system.match_photo(&photo, k)).await?;
    let mut v = to_json(&found)?;
    add_picture_urls(&mut v, "crop");
    Ok(Json(v))
}

#[derive(Deserialize)]
struct CreateEnrollment {
    name: String,
    /// The slug of a person already in the gallery to add this video to (otherwise the
    /// enrollment is a new person, even under a name like someone else's).
    join: Option<String>,
    /// The upload's type (needed for a presigned upload).
    content_type: Option<String>,
    /// The upload's size in bytes (needed for a presigned upload).
    size: Option<u64>,
}

/// What `POST /v1/enrollments` answers: where to send the video and where to follow it.
#[derive(Serialize)]
struct EnrollmentCreated {
    upload_id: String,
    slug: String,
    display_name: String,
    upload_url: String,
    upload_method: &'static str,
    /// Headers the upload must carry (a presigned upload signs them).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    upload_headers: std::collections::BTreeMap<String, String>,
    upload_content_types: &'static [&'static str],
    max_upload_bytes: usize,
    status_url: String,
}

/// `POST /v1/enrollments`: `{name}` → an upload id and the URL to `PUT` the video to.
async fn create_enrollment(
    _: WriteAccess,
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateEnrollment>,
) -> Result<Response, ApiError> {
    // With a signer the upload goes straight to the store: its type and size are signed.
    let presign = match &st.config.signer {
        Some(signer) => {
            let content_type = body.content_type.clone().unwrap_or_default();
            let ext = twin_app::system::extension_for(&content_type).ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "say the upload's content_type: a video (video/mp4, video/quicktime, video/webm) or a photo (image/jpeg, image/png, image/webp)",
                )
            })?;
            let limit = if twin_app::system::is_video(ext) {
                st.config.max_video_bytes
            } else {
                st.config.max_photo_bytes
            } as u64;
            let size = body
                .size
                .filter(|&n| n > 0)
                .ok_or_else(|| ApiError::bad_request("say the upload's size in bytes"))?;
            if size > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("the upload is {size} bytes; at most {limit} are accepted"),
                ));
            }
            Some((signer.clone(), content_type, ext, size))
        }
        None => None,
    };
    let system = st.system.clone();
    let e = blocking(move || system.create_enrollment(&body.name, body.join.as_deref())).await?;
    let status_url = format!("/v1/enrollments/{}", e.upload_id);
    let (upload_url, upload_headers) = match presign {
        Some((signer, content_type, ext, size)) => {
            let key = keys::upload_key(&e.slug, &e.upload_id, ext)
                .map_err(|err| ApiError::internal(format_args!("upload key: {err}")))?;
            let p =
                tokio::task::spawn_blocking(move || signer.presign_put(&key, &content_type, size))
                    .await
                    .map_err(|err| ApiError::internal(format_args!("presigning failed: {err}")))?
                    .map_err(|err| ApiError::internal(format_args!("presigning failed: {err}")))?;
            (p.url, p.headers.into_iter().collect())
        }
        None => (
            absolute(&headers, &format!("/v1/uploads/{}", e.upload_id)),
            Default::default(),
        ),
    };
    let created = EnrollmentCreated {
        upload_url,
        upload_headers,
        upload_method: "PUT",
        upload_content_types: &body::UPLOAD_TYPES,
        max_upload_bytes: st.config.max_video_bytes,
        status_url: status_url.clone(),
        upload_id: e.upload_id,
        slug: e.slug,
        display_name: e.display_name,
    };
    let mut response = (StatusCode::CREATED, Json(to_json(&created)?)).into_response();
    if let Ok(v) = HeaderValue::from_str(&status_url) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// `path` on this server, absolute when the request says which host it was sent to.
fn absolute(headers: &HeaderMap, path: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    match host {
        Some(h) => format!("{}://{h}{path}", if https { "https" } else { "http" }),
        None => path.to_string(),
    }
}

/// An enrollment status as callers see it: picture URLs of the faces cut, and no storage key
/// of the raw upload (an internal detail).
fn status_json(status: &twin_app::system::EnrollmentStatus) -> Result<Value, ApiError> {
    let mut v = to_json(status)?;
    if let Value::Object(map) = &mut v {
        map.remove("source_key");
        map.remove("queued");
        map.insert(
            "advice".into(),
            serde_json::json!(twin_core::enrollment::advice(status)),
        );
    }
    add_picture_urls(&mut v, "crops");
    Ok(v)
}

fn unknown_upload() -> ApiError {
    ApiError::not_found("there is no enrollment with this upload id")
}

/// `PUT /v1/uploads/{upload_id}`: the enrollment video (the local stand-in for a presigned
/// S3 URL). Starts the ingest in the background and answers with the status.
async fn upload(
    _: WriteAccess,
    State(st): State<AppState>,
    ApiPath(upload_id): ApiPath<String>,
    req: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    keys::check_upload_id(&upload_id).map_err(|_| unknown_upload())?;
    let media_type = body::content_type(req.headers())
        .map(|t| body::canonical(&t).to_string())
        .filter(|t| body::UPLOAD_TYPES.contains(&t.as_str()))
        .ok_or_else(|| {
            ApiError::unsupported_media(
                "send the video as video/mp4, video/quicktime (.mov) or video/webm",
            )
        })?;
    let (limit, what) = if media_type.starts_with("image/") {
        (st.config.max_photo_bytes, "the photo")
    } else {
        (st.config.max_video_bytes, "the video")
    };
    body::check_declared_length(req.headers(), limit, what)?;
    // Refuse an unknown or used upload id before reading up to `limit` bytes.
    let system = st.system.clone();
    let id = upload_id.clone();
    let before = blocking(move || system.enrollment_status(&id)).await?;
    if before.state != "created" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this enrollment already has its video; start a new enrollment to send another",
        ));
    }
    let bytes = body::read_limited(req.into_body(), limit, what).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(format!("{what} is empty")));
    }
    let system = st.system.clone();
    let status =
        blocking(move || system.upload_enrollment(&upload_id, &media_type, &bytes)).await?;
    Ok((StatusCode::ACCEPTED, Json(status_json(&status)?)))
}

/// `GET /v1/enrollments/{upload_id}`: where an enrollment is.
async fn enrollment_status(
    State(st): State<AppState>,
    ApiPath(upload_id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    keys::check_upload_id(&upload_id).map_err(|_| unknown_upload())?;
    let system = st.system.clone();
    let status = blocking(move || system.enrollment_status_fresh(&upload_id)).await?;
    Ok(Json(status_json(&status)?))
}

#[derive(Deserialize)]
struct PageQuery {
    offset: Option<usize>,
    limit: Option<usize>,
}

/// `GET /v1/identities`: the gallery, a page at a time.
async fn identities(
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let system = st.system.clone();
    let page = blocking(move || system.identities(offset, limit)).await?;
    let mut v = to_json(&page)?;
    add_picture_urls(&mut v, "picture");
    Ok(Json(v))
}

fn unknown_identity(slug: &str) -> ApiError {
    ApiError::not_found(format!(
        "there is nobody called {:?} in the gallery",
        slug.chars().take(64).collect::<String>()
    ))
}

/// `GET /v1/identities/{slug}`: one person of the gallery.
async fn identity(
    State(st): State<AppState>,
    ApiPath(slug): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    keys::check_slug(&slug).map_err(|_| unknown_identity(&slug))?;
    let system = st.system.clone();
    let info = blocking(move || system.identity(&slug)).await?;
    let mut v = to_json(&info)?;
    add_picture_urls(&mut v, "picture");
    Ok(Json(v))
}

/// `DELETE /v1/identities/{slug}`: erases a person (crops, uploads, embeddings).
async fn delete_identity(
    _: WriteAccess,
    State(st): State<AppState>,
    ApiPath(slug): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    keys::check_slug(&slug).map_err(|_| unknown_identity(&slug))?;
    let system = st.system.clone();
    blocking(move || system.delete_identity(&slug)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/crops/{slug}/{upload_id}/{file}`: a face picture (PNG).
async fn crop(
    State(st): State<AppState>,
    ApiPath((slug, upload_id, file)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    let missing = || ApiError::not_found("there is no such picture");
    let frame_ms = file
        .strip_suffix(".png")
        .filter(|ms| !ms.is_empty() && ms.len() <= 12 && ms.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|ms| ms.parse::<u64>().ok())
        .ok_or_else(missing)?;
    let key = keys::crop_key(&slug, &upload_id, frame_ms).map_err(|_| missing())?;
    if key != format!("crops/{slug}/{upload_id}/{file}") {
        // "007.png" names the same number as "7.png", but only the latter exists.
        return Err(missing());
    }
    let system = st.system.clone();
    let png = blocking(move || system.crop(&key)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            // Erasure must take effect at once: the browser asks again each time.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        png,
    )
        .into_response())
}

/// `GET /v1/models`: the serving model, the promoted one, a load failure if any, and the
/// versions with their held-out metrics.
async fn models(State(st): State<AppState>) -> Result<Json<Value>, ApiError> {
    let system = st.system.clone();
    let info = blocking(move || system.models()).await?;
    Ok(Json(to_json(&info)?))
}

/// `POST /v1/models/{n}/promote`: points `models/CURRENT` at version `n` (promotion or
/// rollback) and loads it; answers what serves afterwards.
async fn promote_model(
    _: WriteAccess,
    State(st): State<AppState>,
    ApiPath(version): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let n: u64 = version
        .parse()
        .ok()
        .filter(|_| version.len() <= 12)
        .ok_or_else(|| ApiError::not_found("there is no such model version"))?;
    let system = st.system.clone();
    let info = blocking(move || system.promote_model(n)).await?;
    Ok(Json(to_json(&info)?))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::not_found(format!("there is no {method} {path} here"))
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not supported at this address"),
    )
}

/// One log line per request (route template, not the path: paths carry names) and the
/// headers every response gets.
async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "(no route)".to_string());
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    tracing::info!(
        %method,
        route,
        status = response.status().as_u16(),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picture_urls() {
        assert_eq!(
            crop_url("crops/ada/abc-1/100.png").as_deref(),
            Some("/v1/crops/ada/abc-1/100.png")
        );
        assert_eq!(crop_url("uploads/ada/x.mp4"), None);
        let mut v = serde_json::json!({"faces": [{"matches": [{"crop": "crops/a/b/1.png"}]}]});
        add_picture_urls(&mut v, "crop");
        assert_eq!(
            v["faces"][0]["matches"][0]["crop_url"],
            "/v1/crops/a/b/1.png"
        );
        let mut v = serde_json::json!({"crops": ["crops/a/b/1.png", "crops/a/b/2.png"]});
        add_picture_urls(&mut v, "crops");
        assert_eq!(
            v["crop_urls"],
            serde_json::json!(["/v1/crops/a/b/1.png", "/v1/crops/a/b/2.png"])
        );
    }

    #[test]
    fn absolute_urls() {
        let mut h = HeaderMap::new();
        assert_eq!(absolute(&h, "/v1/uploads/x"), "/v1/uploads/x");
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert_eq!(
            absolute(&h, "/v1/uploads/x"),
            "http://127.0.0.1:8080/v1/uploads/x"
        );
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(absolute(&h, "/p"), "https://127.0.0.1:8080/p");
        h.insert(header::HOST, HeaderValue::from_static("evil\"host"));
        assert_eq!(absolute(&h, "/p"), "/p");
    }
}
