//! The training job and model serving, on real faces from `../shared/data/faces`:
//! the composed ONNX graph against the backbone and the head applied in Rust, and a server
//! that hot-reloads `models/CURRENT`, keeps serving when a new model is corrupt, picks up a good
//! one afterwards, and never returns an erased identity the head still knows.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;
use twin_app::local::{Local, LocalConfig};
use twin_app::serving::{ModelServing, Scorer};
use twin_core::keys::model_key;
use twin_core::store::{Condition, LocalStore, ObjectStore};
use twin_http::{router, Api, HttpConfig, Uploads};
use twin_model::chip::CHIP_SIZE;
use twin_model::embed::{ChipBatch, Embedder, EmbedderOptions};
use twin_model::models;
use twin_model::onnx::head::read_head;
use twin_model::train::{self, TrainOptions};

const SETUP_HINT: &str = "run scripts/setup (it installs ONNX Runtime and the models)";
const PEOPLE: [&str; 6] = [
    "Barack_Obama",
    "Ben_Afflek",
    "Elton_John",
    "Jerry_Seinfeld",
    "Madonna",
    "Mindy_Kaling",
];

fn shared_data(rel: &str) -> PathBuf {
    let p = twin_tests::data_dir().join(rel);
    assert!(
        p.exists(),
        "{} is missing (../shared beside the repo)",
        p.display()
    );
    p
}

fn models_dir() -> PathBuf {
    let d = twin_tests::models_dir();
    assert!(
        d.join(twin_core::paths::BACKBONE_FILE).is_file(),
        "{} has no backbone; {SETUP_HINT}",
        d.display()
    );
    d
}

fn backbone() -> Vec<u8> {
    std::fs::read(models_dir().join(twin_core::paths::BACKBONE_FILE)).expect(SETUP_HINT)
}

/// A data folder with six identities of `../shared/data/faces` imported.
fn gallery(dir: &Path, poll: Duration) -> Arc<Local> {
    let faces = dir.join("faces");
    std::fs::create_dir_all(&faces).unwrap();
    for p in PEOPLE {
        std::os::unix::fs::symlink(shared_data(&format!("faces/{p}")), faces.join(p)).unwrap();
    }
    let mut config = LocalConfig::new(dir.join("data"), models_dir(), 1);
    config.model_poll = poll;
    let sys = Local::open_inline(&config).expect(SETUP_HINT);
    let summary = sys.import.folder(&faces, &|_, _| {}).unwrap();
    assert_eq!(summary.identities, PEOPLE.len());
    assert!(summary.imported >= 110, "{summary:?}");
    drop(sys);
    Local::open(config).expect(SETUP_HINT)
}

fn options(seed: u64) -> TrainOptions {
    TrainOptions {
        seed,
        threads: 1,
        ..Default::default()
    }
}

#[test]
fn composed_model_equals_backbone_and_rust_head() {
    let dir = tempfile::tempdir().unwrap();
    let sys = gallery(dir.path(), Duration::from_secs(3600));
    let store = LocalStore::open(&dir.path().join("data")).unwrap();
    let outcome = models::train_and_gate(&store, &backbone(), &options(1), &|_, _| {}).unwrap();
    let m = &outcome.metrics;
    assert_eq!(m.version, 1);
    assert_eq!(m.identities, PEOPLE.len());
    assert!(m.held_out_rows >= 20 && m.train_rows >= 80, "{m:?}");
    assert!(m.model.top1 > 0.8 && m.baseline.top1 > 0.8, "{m:?}");
    assert_eq!(
        m.promoted,
        models::gate(&m.model, &m.baseline, None).promotes(),
        "the decision follows from the numbers"
    );
    let labels = models::read_labels(&store, 1).unwrap();
    let slugs: Vec<&str> = labels.labels.iter().map(|l| l.slug.as_str()).collect();
    assert_eq!(slugs.len(), PEOPLE.len());
    assert!(slugs.contains(&"barack_obama"), "{slugs:?}");

    // Both models on 24 real crops.
    let model_bytes = store.get(&model_key(1)).unwrap().unwrap().data;
    let model_file = dir.path().join("model.onnx");
    std::fs::write(&model_file, &model_bytes).unwrap();
    let opts = EmbedderOptions { threads: 1 };
    let composed = Embedder::open(&model_file, &opts).unwrap();
    let base = Embedder::open(&models_dir().join(twin_core::paths::BACKBONE_FILE), &opts).unwrap();
    assert_eq!(composed.classes(), Some(PEOPLE.len()));
    assert_eq!(base.classes(), None);
    let mut batch = ChipBatch::new();
    for key in store.list("crops/").unwrap().iter().step_by(5).take(24) {
        let png = store.get(key).unwrap().unwrap().data;
        let chip = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(chip.width() as usize, CHIP_SIZE);
        batch.push(&chip).unwrap();
    }
    assert_eq!(batch.len(), 24);
    let out = composed.embed_scored(&batch).unwrap();
    let reference = base.embed(&batch).unwrap();
    let emb_diff = out
        .embeddings
        .data
        .iter()
        .zip(&reference.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        emb_diff <= 1e-5,
        "embedding differs from the backbone's by {emb_diff}"
    );
    let (weights, c, d) = read_head(&model_bytes).unwrap();
    let head = train::Head {
        labels: labels.labels.clone(),
        dim: d,
        weights,
    };
    let scores = out.scores.expect("a trained model has scores");
    assert_eq!(scores.len(), 24 * c);
    let mut score_diff = 0f32;
    for (i, row) in out.embeddings.rows().enumerate() {
        let rust = head.scores(row);
        for (a, b) in rust.iter().zip(&scores[i * c..(i + 1) * c]) {
            score_diff = score_diff.max((a - b).abs());
        }
    }
    println!("composed model vs backbone: max |Δembedding| {emb_diff:e}; scores vs Rust head: max |Δ| {score_diff:e}");
    assert!(
        score_diff <= 1e-5,
        "scores differ from the Rust head by {score_diff}"
    );
    drop(sys);
}

/// What the `api` does as it starts: the promoted model read from the store on a thread of its
/// own (`ModelServing::fetch`) before the backbone is open, then checked on it
/// (`check_fetched`). It must serve exactly as `check` would, and a damaged model must leave the
/// backbone serving with the failure reported.
#[test]
fn a_model_read_before_the_backbone_opens_serves_as_a_check_would() {
    let dir = tempfile::tempdir().unwrap();
    let sys = gallery(dir.path(), Duration::from_secs(3600));
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(&dir.path().join("data")).unwrap());
    models::train_and_gate(&*store, &backbone(), &options(1), &|_, _| {}).unwrap();
    models::promote(&*store, 1).unwrap();
    let backbone_file = models_dir().join(twin_core::paths::BACKBONE_FILE);
    let open = || ModelServing::new(store.clone(), sys.models.backbone().clone(), 1);

    let fetched = ModelServing::fetch(&*store, &backbone_file);
    let serving = open();
    assert_eq!(serving.check_fetched(fetched), Some(1));
    assert!(
        matches!(serving.current().scorer.as_deref(), Some(Scorer::Head(_))),
        "composed on this backbone (its tag read with the model): served as a head"
    );
    let checked = open();
    assert_eq!(checked.check(), Some(1));
    assert_eq!(serving.current().columns, checked.current().columns);

    // Model 2: model 1's labels, a damaged model.onnx.
    let good = store.get(&model_key(1)).unwrap().unwrap().data;
    let labels = store.get("models/1/labels.json").unwrap().unwrap().data;
    store
        .put("models/2/labels.json", &labels, Condition::None)
        .unwrap();
    store
        .put(&model_key(2), &good[..good.len() / 2], Condition::None)
        .unwrap();
    store
        .put(twin_core::keys::MODELS_CURRENT, b"2", Condition::None)
        .unwrap();
    let fresh = open();
    assert_eq!(
        fresh.check_fetched(ModelServing::fetch(&*store, &backbone_file)),
        None
    );
    let info = fresh.models().unwrap();
    assert_eq!(info.serving_version, None);
    assert_eq!(info.load_error.map(|e| e.version), Some(2));
    // The process already serving model 1 keeps it.
    assert_eq!(
        serving.check_fetched(ModelServing::fetch(&*store, &backbone_file)),
        Some(1)
    );
}

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn match_request() -> Request<Body> {
    let photo = std::fs::read(shared_data("media/obama.jpg")).unwrap();
    Request::builder()
        .method(Method::POST)
        .uri("/v1/match?k=6")
        .header("content-type", "image/jpeg")
        .body(Body::from(photo))
        .unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_reloads_models_keeps_serving_on_a_corrupt_one_and_forgets_the_erased() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let sys = tokio::task::spawn_blocking(move || gallery(&root, Duration::from_millis(100)))
        .await
        .unwrap();
    let store = LocalStore::open(&dir.path().join("data")).unwrap();
    let backbone = backbone();
    // Versions 1 and 3 are good; 2 is version 1's files with a damaged model.onnx.
    for seed in [1, 2] {
        models::train_and_gate(&store, &backbone, &options(seed), &|_, _| {}).unwrap();
    }
    let good = store.get(&model_key(2)).unwrap().unwrap().data;
    for f in ["labels.json", "metrics.json"] {
        let data = store.get(&format!("models/2/{f}")).unwrap().unwrap().data;
        store
            .put(&format!("models/3/{f}"), &data, Condition::None)
            .unwrap();
    }
    // Version 3 is composed on a backbone whose bytes differ (the same network, another
    // doc string appended as a protobuf field): it cannot take the head-only path.
    let mut other = backbone.clone();
    other.extend_from_slice(&[0x32, 0x01, b'x']);
    let (weights, c, d) = read_head(&good).unwrap();
    let v3 = twin_model::onnx::head::compose(&other, &weights, c, d, &[]).unwrap();
    store.put(&model_key(3), &v3, Condition::None).unwrap();
    store
        .put(&model_key(2), &good[..good.len() / 2], Condition::None)
        .unwrap();

    let mut config = HttpConfig::new(Uploads::Here(sys.clone()));
    config.api_key = Some("k".into());
    let app = router(Api::local(&sys), config);
    // Promotion through the API needs the key.
    let promote = |n: u64, key: Option<&str>| {
        let mut b = Request::builder()
            .method(Method::POST)
            .uri(format!("/v1/models/{n}/promote"));
        if let Some(k) = key {
            b = b.header("x-api-key", k);
        }
        b.body(Body::empty()).unwrap()
    };
    let (status, _) = call(&app, promote(1, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = call(&app, promote(9, Some("k"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = call(&app, promote(1, Some("k"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["serving_version"], 1, "{body}");
    // Composed on the backbone this process serves: its head alone, on the backbone's output.
    assert!(
        matches!(
            sys.models.current().scorer.as_deref(),
            Some(Scorer::Head(_))
        ),
        "model 1 is served as a head on the backbone"
    );

    let (status, body) = call(&app, match_request()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], 1, "{body}");
    let top = &body["faces"][0]["matches"][0];
    assert_eq!(top["slug"], "barack_obama", "{body}");
    assert!(top["model_score"].as_f64().unwrap() > 0.5, "{body}");
    assert_eq!(top["same_person"], true, "{body}");

    // CURRENT → the damaged version 2 (written behind the server's back, as another process
    // would): the server notices, fails to load it, keeps answering with 1 and says why.
    store
        .put(twin_core::keys::MODELS_CURRENT, b"2", Condition::None)
        .unwrap();
    let s = sys.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("the load failure", || {
            s.models
                .models()
                .unwrap()
                .load_error
                .is_some_and(|e| e.version == 2)
        })
    })
    .await
    .unwrap();
    let (_, body) = call(&app, match_request()).await;
    assert_eq!(body["model_version"], 1, "{body}");
    let (status, info) = call(
        &app,
        Request::builder()
            .uri("/v1/models")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["serving_version"], 1, "{info}");
    assert_eq!(info["promoted_version"], 2, "{info}");
    assert_eq!(info["load_error"]["version"], 2, "{info}");
    assert!(
        info["load_error"]["error"]
            .as_str()
            .unwrap()
            .contains("model"),
        "{info}"
    );
    assert_eq!(info["versions"].as_array().unwrap().len(), 3, "{info}");

    // CURRENT → the good version 3: picked up, the failure cleared.
    let started = Instant::now();
    store
        .put(twin_core::keys::MODELS_CURRENT, b"3", Condition::None)
        .unwrap();
    let s = sys.clone();
    tokio::task::spawn_blocking(move || wait_for("model 3", || s.models.version() == Some(3)))
        .await
        .unwrap();
    let (_, body) = call(&app, match_request()).await;
    println!(
        "reload: CURRENT → 3 to the first answer by model 3: {:.0} ms (polling every 100 ms)",
        started.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(body["model_version"], 3, "{body}");
    assert!(sys.models.models().unwrap().load_error.is_none());
    assert!(
        matches!(
            sys.models.current().scorer.as_deref(),
            Some(Scorer::Composed(_))
        ),
        "model 3, composed on other backbone bytes, is served whole"
    );

    // Erase Obama: the head still has a column for him, the answer never names him.
    let (status, _) = call(
        &app,
        Request::builder()
            .method(Method::DELETE)
            .uri("/v1/identities/barack_obama")
            .header("x-api-key", "k")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, body) = call(&app, match_request()).await;
    assert_eq!(body["model_version"], 3, "{body}");
    let matches = body["faces"][0]["matches"].as_array().unwrap();
    assert_eq!(matches.len(), PEOPLE.len() - 1, "{body}");
    assert!(
        matches.iter().all(|m| m["slug"] != "barack_obama"),
        "{body}"
    );
    assert!(matches.iter().all(|m| m["same_person"] == false), "{body}");
}
