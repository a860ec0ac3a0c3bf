//! The HTTP API and the web page: one axum [`Router`] for every host.
//!
//! `twin serve` serves it with a tokio listener, the `api` Lambda function through
//! `lambda_http`, and the tests drive it in-process with `oneshot`. The routes are the API of
//! `docs/API.md` (also served as an OpenAPI document at `/v1/openapi.json`); the page at `/` is
//! plain HTML, CSS and JavaScript compiled into the binary. Handlers only translate: each parses
//! the request, calls one use case on tokio's blocking pool and maps its result to a typed
//! response body ([`responses`]); every failure becomes a response in one place
//! ([`error::ApiError`]). Writes need the API key ([`auth`]); bodies are read under the media
//! limits ([`body`]). Logs carry the method, the route template, the status and the time
//! taken: never a body, a name in a path, an image or an embedding.

pub mod auth;
pub mod body;
pub mod error;
mod page;
pub mod responses;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use twin_app::enrollment::{Enrollments, UploadReceiver};
use twin_app::erasure::Erasure;
use twin_app::gallery::GalleryView;
use twin_app::matching::Matching;
use twin_app::serving::ModelServing;
use twin_core::keys;
use twin_core::limits::{DEFAULT_K, DEFAULT_PAGE, MAX_K, MAX_PAGE};
use twin_core::media::{self, Media, MAX_PHOTO_BYTES};
use twin_core::names;
use twin_core::store::UploadSigner;

use auth::WriteAccess;
use error::ApiError;
use responses::{EnrollmentCreated, IdentityBody, IdentityPageBody, MatchBody, StatusBody};

/// Environment variable holding the API key writes need (read by the hosts).
pub const API_KEY_ENV: &str = "TWIN_API_KEY";
/// Room for a multipart form's boundaries and headers around the photo.
const FORM_OVERHEAD: usize = 64 * 1024;

/// The use cases the API calls.
#[derive(Clone)]
pub struct Api {
    /// `POST /v1/match`.
    pub matching: Arc<Matching>,
    /// `POST /v1/enrollments`, `GET /v1/enrollments/{id}`.
    pub enrollments: Arc<Enrollments>,
    /// `GET /v1/identities…`, `GET /v1/crops/…`.
    pub gallery: Arc<GalleryView>,
    /// `DELETE /v1/identities/{slug}`.
    pub erasure: Arc<Erasure>,
    /// `GET /v1/models`, `POST /v1/models/{n}/promote`.
    pub models: Arc<ModelServing>,
}

impl Api {
    /// The local host's use cases.
    #[cfg(feature = "local")]
    pub fn local(l: &twin_app::local::Local) -> Self {
        Api {
            matching: l.matching.clone(),
            enrollments: l.enrollments.clone(),
            gallery: l.gallery.clone(),
            erasure: l.erasure.clone(),
            models: l.models.clone(),
        }
    }
}

/// Where enrollment uploads go.
#[derive(Clone)]
pub enum Uploads {
    /// Straight to the store with a presigned `PUT` (S3), whose upload event starts ingest.
    Presigned(Arc<dyn UploadSigner>),
    /// To this server (`PUT /v1/uploads/{upload_id}`), which has them ingested.
    Here(Arc<dyn UploadReceiver>),
}

/// How the router behaves beyond what the use cases do.
#[derive(Clone)]
pub struct HttpConfig {
    /// Where enrollment uploads go.
    pub uploads: Uploads,
    /// The key writes need; `None` refuses writes unless `allow_writes_without_key`.
    pub api_key: Option<String>,
    /// Accept writes without a key when none is configured, from this machine only (see
    /// [`auth`]).
    pub allow_writes_without_key: bool,
    /// Answer only requests whose `Host` is a loopback name (a server listening on loopback: a
    /// web page whose name was re-pointed at 127.0.0.1, DNS rebinding, reads nothing).
    pub loopback_hosts_only: bool,
}

impl HttpConfig {
    /// Uploads to `uploads`, writes refused until a key is set.
    pub fn new(uploads: Uploads) -> Self {
        HttpConfig {
            uploads,
            api_key: None,
            allow_writes_without_key: false,
            loopback_hosts_only: false,
        }
    }
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field(
                "uploads",
                &match self.uploads {
                    Uploads::Presigned(_) => "presigned",
                    Uploads::Here(_) => "here",
                },
            )
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("allow_writes_without_key", &self.allow_writes_without_key)
            .field("loopback_hosts_only", &self.loopback_hosts_only)
            .finish()
    }
}

/// What every handler gets: the use cases and the configuration.
#[derive(Clone)]
pub struct AppState {
    api: Api,
    config: Arc<HttpConfig>,
}

/// The router: `api`'s use cases behind the routes, configured by `config`.
pub fn router(api: Api, config: HttpConfig) -> Router {
    let photo_limit = MAX_PHOTO_BYTES + FORM_OVERHEAD;
    let origin = match &config.uploads {
        Uploads::Presigned(s) => s.upload_origin(),
        Uploads::Here(_) => None,
    };
    let local_uploads = matches!(config.uploads, Uploads::Here(_));
    let csp = HeaderValue::from_str(&page::page_csp(origin.as_deref()))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    let loopback_hosts_only = config.loopback_hosts_only;
    let state = AppState {
        api,
        config: Arc::new(config),
    };
    let mut router = Router::new()
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
        .route("/v1/identities", get(identities))
        .route(
            "/v1/identities/{slug}",
            get(identity).delete(delete_identity),
        )
        .route("/v1/crops/{slug}/{upload_id}/{file}", get(crop))
        .route("/v1/models", get(models))
        .route("/v1/models/{version}/promote", post(promote_model))
        .route("/v1/openapi.json", get(page::openapi));
    if local_uploads {
        router = router.route("/v1/uploads/{upload_id}", put(upload));
    }
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    let router = if loopback_hosts_only {
        router.layer(middleware::from_fn(loopback_hosts))
    } else {
        router
    };
    router.layer(middleware::from_fn(observe)).with_state(state)
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

/// Runs a blocking use case call on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> twin_app::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format_args!(
            "use case call failed: {e}"
        ))),
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
) -> Result<Json<MatchBody>, ApiError> {
    let k = q.k.unwrap_or(DEFAULT_K);
    if !(1..=MAX_K).contains(&k) {
        return Err(ApiError::bad_request(format!(
            "k must be between 1 and {MAX_K}"
        )));
    }
    let photo = body::photo(req, MAX_PHOTO_BYTES).await?;
    let matching = st.api.matching.clone();
    let found = blocking(move || matching.match_photo(&photo, k)).await?;
    Ok(Json(MatchBody::from(found)))
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

/// `POST /v1/enrollments`: `{name}` → an upload id and the URL to `PUT` the video to.
async fn create_enrollment(
    _: WriteAccess,
    State(st): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateEnrollment>,
) -> Result<Response, ApiError> {
    let enrollments = st.api.enrollments.clone();
    let (e, upload_url, upload_headers) = match &st.config.uploads {
        Uploads::Presigned(signer) => {
            let signer = signer.clone();
            let (e, put) = blocking(move || {
                enrollments.create_presigned(
                    &body.name,
                    body.join.as_deref(),
                    body.content_type.as_deref().unwrap_or(""),
                    body.size,
                    &*signer,
                )
            })
            .await?;
            (e, put.url, put.headers.into_iter().collect())
        }
        Uploads::Here(_) => {
            let e = blocking(move || enrollments.create(&body.name, body.join.as_deref())).await?;
            let url = absolute(&headers, &format!("/v1/uploads/{}", e.upload_id));
            (e, url, Default::default())
        }
    };
    let created = EnrollmentCreated::new(e, upload_url, upload_headers);
    let location = HeaderValue::from_str(&created.status_url).ok();
    let mut response = (StatusCode::CREATED, Json(created)).into_response();
    if let Some(v) = location {
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

fn unknown_upload() -> ApiError {
    ApiError::not_found("there is no enrollment with this upload id")
}

/// `PUT /v1/uploads/{upload_id}`: the enrollment video sent to this server (the local
/// stand-in for a presigned upload). Starts the ingest and answers with the status.
async fn upload(
    _: WriteAccess,
    State(st): State<AppState>,
    ApiPath(upload_id): ApiPath<String>,
    req: Request,
) -> Result<(StatusCode, Json<StatusBody>), ApiError> {
    let Uploads::Here(receiver) = &st.config.uploads else {
        return Err(unknown_upload());
    };
    keys::check_upload_id(&upload_id).map_err(|_| unknown_upload())?;
    let media = body::content_type(req.headers())
        .as_deref()
        .and_then(Media::from_mime)
        .ok_or_else(|| {
            ApiError::unsupported_media(format!("send {} (video/mp4, video/quicktime, video/webm, image/jpeg, image/png, image/webp)", media::ACCEPTED))
        })?;
    body::check_declared_length(req.headers(), media.limit(), media.noun())?;
    // Refuse an unknown or used upload id before reading up to the limit.
    let enrollments = st.api.enrollments.clone();
    let id = upload_id.clone();
    blocking(move || enrollments.expect_upload(&id)).await?;
    let bytes = body::within(
        body::VIDEO_BODY_SECONDS,
        media.noun(),
        body::read_limited(req.into_body(), media.limit(), media.noun()),
    )
    .await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(format!("{} is empty", media.noun())));
    }
    let receiver = receiver.clone();
    let status = blocking(move || receiver.receive(&upload_id, media.mime(), &bytes)).await?;
    Ok((StatusCode::ACCEPTED, Json(StatusBody::from(status))))
}

/// `GET /v1/enrollments/{upload_id}`: where an enrollment is.
async fn enrollment_status(
    State(st): State<AppState>,
    ApiPath(upload_id): ApiPath<String>,
) -> Result<Json<StatusBody>, ApiError> {
    keys::check_upload_id(&upload_id).map_err(|_| unknown_upload())?;
    let enrollments = st.api.enrollments.clone();
    let status = blocking(move || enrollments.status_fresh(&upload_id)).await?;
    Ok(Json(StatusBody::from(status)))
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
) -> Result<Json<IdentityPageBody>, ApiError> {
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let gallery = st.api.gallery.clone();
    let page = blocking(move || gallery.identities(offset, limit)).await?;
    Ok(Json(IdentityPageBody::from(page)))
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
) -> Result<Json<IdentityBody>, ApiError> {
    names::check_slug(&slug).map_err(|_| unknown_identity(&slug))?;
    let gallery = st.api.gallery.clone();
    let info = blocking(move || gallery.identity(&slug)).await?;
    Ok(Json(IdentityBody::from(info)))
}

/// `DELETE /v1/identities/{slug}`: erases a person (crops, uploads, embeddings, records).
async fn delete_identity(
    _: WriteAccess,
    State(st): State<AppState>,
    ApiPath(slug): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    names::check_slug(&slug).map_err(|_| unknown_identity(&slug))?;
    let erasure = st.api.erasure.clone();
    blocking(move || erasure.erase(&slug).map(|_| ())).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/crops/{slug}/{upload_id}/{file}`: a face picture (PNG).
async fn crop(
    State(st): State<AppState>,
    ApiPath((slug, upload_id, file)): ApiPath<(String, String, String)>,
) -> Result<Response, ApiError> {
    let missing = || ApiError::not_found("there is no such picture");
    let key = format!("{}{slug}/{upload_id}/{file}", keys::CROPS);
    // The key must be exactly the one its frame number builds ("007.png" names the same number
    // as "7.png", but only the latter exists).
    let frame = keys::crop_frame(&key, &slug, &upload_id).ok_or_else(missing)?;
    if keys::crop_key(&slug, &upload_id, frame).ok().as_deref() != Some(key.as_str()) {
        return Err(missing());
    }
    let gallery = st.api.gallery.clone();
    let png = blocking(move || gallery.crop(&key)).await?;
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
async fn models(
    State(st): State<AppState>,
) -> Result<Json<twin_app::serving::ModelsInfo>, ApiError> {
    let models = st.api.models.clone();
    Ok(Json(blocking(move || models.models()).await?))
}

/// `POST /v1/models/{n}/promote`: points `models/CURRENT` at version `n` (promotion or
/// rollback) and loads it; answers what serves afterwards.
async fn promote_model(
    _: WriteAccess,
    State(st): State<AppState>,
    ApiPath(version): ApiPath<String>,
) -> Result<Json<twin_app::serving::ModelsInfo>, ApiError> {
    let n: u64 = version
        .parse()
        .ok()
        .filter(|_| version.len() <= 12)
        .ok_or_else(|| ApiError::not_found("there is no such model version"))?;
    let models = st.api.models.clone();
    Ok(Json(blocking(move || models.promote(n)).await?))
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
/// Refuses a request whose `Host` is not a loopback name ([`HttpConfig::loopback_hosts_only`]).
async fn loopback_hosts(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let host = auth::request_host(&parts).map(auth::host_of);
    if !host.is_some_and(auth::is_loopback_host) {
        return ApiError::forbidden(
            "this server answers only to localhost, 127.0.0.1 or [::1] (it listens on this \
             machine's loopback)",
        )
        .into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

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
