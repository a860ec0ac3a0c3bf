//! Twin Matcher's `api` function: the HTTP API and the web page behind an API Gateway HTTP API
//! (payload 2.0), served through `lambda_http`.
//!
//! It is the same axum router as `twin serve` ([`twin_http::router_with`]), on the core
//! opened over the bucket ([`System::open_with`]): enrollments get a presigned `PUT` straight to
//! `uploads/` (its type and size signed), whose S3 event starts the `ingest` function; the
//! promoted model is loaded at start and `models/CURRENT` and `dataset/CURRENT` are polled
//! every `TWIN_MODEL_POLL_SECONDS` off the request path, a model that fails to load leaving the
//! previous one serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use twin_aws::{env_usize, env_var, models_dir_from_env, Aws, ENV_THREADS};
use twin_http::{router_with, HttpConfig};
use twin_app::system::{System, SystemConfig, SystemError};

/// Default polling of `models/CURRENT` and `dataset/CURRENT`.
pub const DEFAULT_POLL_SECONDS: u64 = 10;

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
        ApiSettings {
            models_dir: models_dir_from_env().unwrap_or_else(twin_model::paths::models_dir),
            threads: env_usize(ENV_THREADS, 1),
            poll: Duration::from_secs(env_usize(
                "TWIN_MODEL_POLL_SECONDS",
                DEFAULT_POLL_SECONDS as usize,
            ) as u64),
            api_key: env_var(twin_http::API_KEY_ENV),
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
            signer: Some(Arc::new(store)),
            api_key: settings.api_key.clone(),
            ..HttpConfig::default()
        },
    );
    Ok((system, router))
}
