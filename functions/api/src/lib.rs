//! Twin Matcher's `api` function: the HTTP API and the web page behind an API Gateway HTTP API
//! (payload 2.0), served through `lambda_http`.
//!
//! It is the same axum router as `twin serve` ([`twin_core::http::router_with`]), on the core
//! opened over the bucket ([`System::open_with`]): enrollments get a presigned `PUT` straight to
//! `uploads/` (its type and size signed), whose S3 event starts the `ingest` function; the
//! promoted model is loaded at start and `models/CURRENT` and `dataset/CURRENT` are polled
//! every `TWIN_MODEL_POLL_SECONDS` off the request path, a model that fails to load leaving the
//! previous one serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use twin_aws::{Aws, S3Store};
use twin_core::http::{router_with, HttpConfig};
use twin_core::store::{PresignedPut, StoreError, UploadSigner};
use twin_core::system::{System, SystemConfig, SystemError};

/// How long a presigned upload URL stays valid.
pub const UPLOAD_URL_SECONDS: u64 = 15 * 60;
/// Default polling of `models/CURRENT` and `dataset/CURRENT`.
pub const DEFAULT_POLL_SECONDS: u64 = 10;

/// Presigned uploads into the bucket.
pub struct S3Signer(pub S3Store);

impl UploadSigner for S3Signer {
    fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        content_length: u64,
    ) -> Result<PresignedPut, StoreError> {
        let p = self
            .0
            .presign_put(
                key,
                content_type,
                content_length,
                Duration::from_secs(UPLOAD_URL_SECONDS),
            )
            .map_err(|e| StoreError::Backend {
                key: key.to_string(),
                message: e.to_string(),
            })?;
        Ok(PresignedPut {
            url: p.url,
            headers: p.headers,
            expires_in: p.expires_in.as_secs(),
        })
    }
}

/// Settings read from the environment.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// `TWIN_MODELS_DIR`: the backbone and the landmark model.
    pub models_dir: PathBuf,
    /// `TWIN_THREADS`.
    pub threads: usize,
    /// `TWIN_MODEL_POLL_SECONDS`.
    pub poll: Duration,
    /// `TWIN_API_KEY`: the key writes need (none: writes are refused).
    pub api_key: Option<String>,
}

impl ApiSettings {
    /// From the environment, with defaults.
    pub fn from_env() -> Self {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
        ApiSettings {
            models_dir: var("TWIN_MODELS_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(twin_core::paths::models_dir),
            threads: var("TWIN_THREADS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            poll: Duration::from_secs(
                var("TWIN_MODEL_POLL_SECONDS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(DEFAULT_POLL_SECONDS),
            ),
            api_key: var(twin_core::http::API_KEY_ENV),
        }
    }
}

/// Opens the core over `aws`'s bucket and ingest queue and builds the router (blocking: call
/// it off the async runtime).
pub fn app(aws: &Aws, settings: &ApiSettings) -> Result<(Arc<System>, axum::Router), SystemError> {
    let mut config = SystemConfig::new(
        std::env::temp_dir(),
        settings.models_dir.clone(),
        settings.threads,
    );
    config.model_poll = settings.poll;
    let store = aws.store();
    let system = System::open_with(
        config,
        Arc::new(store.clone()),
        Arc::new(aws.ingest_queue()),
        true,
    )?;
    let router = router_with(
        system.clone(),
        HttpConfig {
            signer: Some(Arc::new(S3Signer(store))),
            api_key: settings.api_key.clone(),
            ..HttpConfig::default()
        },
    );
    Ok((system, router))
}
