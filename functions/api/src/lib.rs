//! Twin Matcher's `api` function: the HTTP API and the web page behind an API Gateway HTTP API
//! (payload 2.0), served through `lambda_http`.
//!
//! It is the same axum router as `twin serve` ([`twin_http::router`]), with the use cases wired
//! over the bucket: enrollments get a presigned `PUT` straight to `uploads/` (its type and size
//! signed), whose S3 event starts the `ingest` function; the promoted model is loaded at start,
//! and `models/CURRENT` and `dataset/CURRENT` are polled every `TWIN_MODEL_POLL_SECONDS` off the
//! request path, a model that fails to load leaving the previous one serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use twin_app::enrollment::Enrollments;
use twin_app::erasure::Erasure;
use twin_app::gallery::{DatasetWriter, GalleryView};
use twin_app::matching::Matching;
use twin_app::serving::ModelServing;
use twin_app::{Engines, Error};
use twin_aws::Aws;
use twin_core::paths::BACKBONE_FILE;
use twin_core::store::ObjectStore;
use twin_http::{router, Api, HttpConfig, Uploads};

/// Default polling of `models/CURRENT` and `dataset/CURRENT`.
pub const DEFAULT_POLL_SECONDS: u64 = 10;

/// The function's settings (read from the environment by its `main`).
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The backbone, the landmark and detector models.
    pub models_dir: PathBuf,
    /// Threads ONNX Runtime may use.
    pub threads: usize,
    /// How often `models/CURRENT` and `dataset/CURRENT` are checked.
    pub poll: Duration,
    /// The key writes need (none: writes are refused).
    pub api_key: Option<String>,
}

/// Wires the API's use cases over `aws`'s bucket, loads the promoted model, starts the polling
/// and builds the router (blocking: call it off the async runtime).
pub fn app(aws: &Aws, settings: &ApiSettings) -> Result<(Api, axum::Router), Error> {
    let s3 = aws.store();
    let store: Arc<dyn ObjectStore> = Arc::new(s3.clone());
    // The gallery loads off the request path, from the start: its rows come from the store while
    // the models open. The first match waits for it if it comes first.
    let gallery = Arc::new(GalleryView::open(store.clone()));
    let warm = gallery.clone();
    std::thread::Builder::new()
        .name("twin-gallery".into())
        .spawn(move || warm.warm())
        .map_err(Error::internal)?;
    // The promoted model is read from the store from the start, while the networks open; it
    // is checked on the backbone while the face models open.
    let fetching = {
        let store = store.clone();
        let backbone_file = settings.models_dir.join(BACKBONE_FILE);
        std::thread::Builder::new()
            .name("twin-model".into())
            .spawn(move || ModelServing::fetch(&*store, &backbone_file))
            .map_err(Error::internal)?
    };
    let mut models = None;
    let engines = Engines::open_with(&settings.models_dir, settings.threads, |backbone| {
        let serving = ModelServing::new(store.clone(), backbone.clone(), settings.threads);
        match fetching.join() {
            Ok(fetched) => serving.check_fetched(fetched),
            Err(_) => serving.check(),
        };
        models = Some(Arc::new(serving));
    })?;
    let models = models.ok_or_else(|| Error::internal("the model was not loaded"))?;
    let writer = Arc::new(DatasetWriter::new(store.clone()));
    let api = Api {
        matching: Arc::new(Matching::new(
            engines.photos,
            models.clone(),
            gallery.clone(),
        )),
        enrollments: Arc::new(Enrollments::new(store.clone(), Some(gallery.clone()))),
        erasure: Arc::new(Erasure::new(
            store,
            writer,
            gallery.clone(),
            models.clone(),
            engines.backbone.dim(),
        )),
        gallery,
        models,
    };
    watch(&api, settings.poll)?;
    let mut config = HttpConfig::new(Uploads::Presigned(Arc::new(s3)));
    config.api_key = settings.api_key.clone();
    Ok((api.clone(), router(api, config)))
}

/// Checks `dataset/CURRENT` and `models/CURRENT` every `poll` on a background thread.
fn watch(api: &Api, poll: Duration) -> Result<(), Error> {
    let gallery = Arc::downgrade(&api.gallery);
    let models = Arc::downgrade(&api.models);
    std::thread::Builder::new()
        .name("twin-models".into())
        .spawn(move || loop {
            std::thread::sleep(poll);
            let (Some(g), Some(m)) = (gallery.upgrade(), models.upgrade()) else {
                return;
            };
            g.refresh_if_moved();
            m.check();
        })
        .map(|_| ())
        .map_err(Error::internal)
}
