//! Cold start of the `api` Lambda function, measured locally: the real `api` binary from process
//! start to its first answer, with the models, the gallery and a trained model loaded from S3.
//!
//! `cargo bench -p twin-tests --bench api_cold_start`:
//! - starts moto with the bucket and the queues ([`Moto::system`]), imports [`GALLERY`] from
//!   `data/faces` into the bucket through the core (the import use case over S3,
//!   [`Import::folder`]), commits [`SYNTHETIC`] synthetic identities beside them (one crop
//!   each, compacted into one segment, as a gallery of that size is), trains a model on it and
//!   promotes it (even when the gate would not), so that a cold start loads backbone, face
//!   models, a gallery of a hundred thousand people and a trained model;
//! - builds the real api binary itself, alone, as `infra/Dockerfile` does (`cargo build
//!   --profile bench -p twin-fn-api --bin api`: the function's own features, so without video
//!   support and the libraries it loads; the `bench` profile is `release`'s; the first run
//!   compiles the crates whose features differ from this bench's), and takes the executable
//!   path cargo reports;
//! - runs a minimal Lambda Runtime API on 127.0.0.1 ([`twin_tests::lambda::RuntimeApi`], what
//!   lambda_runtime 1.x calls: `GET /2018-06-01/runtime/invocation/next`,
//!   `POST .../invocation/{id}/response`, `.../invocation/{id}/error`,
//!   `/2018-06-01/runtime/init/error`) and spawns the binary against it with the environment
//!   Lambda and the SAM template would give it ([`twin_tests::lambda::lambda_command`]: a
//!   cleared environment otherwise; JSON logs, as the template's `LoggingConfig` asks);
//! - [`RUNS`] times: the first invocation is an API Gateway HTTP API (payload 2.0)
//!   `POST /v1/match` event with `data/media/lin-manuel-miranda.png`, queued before the spawn;
//!   the cold start is spawn → its response `POST` (checked: a 200 with faces, answered by the
//!   trained model); then [`WARM`] more invocations, each timed from the moment the emulator hands
//!   the event out to the response; then the process is killed.
//!
//! It prints min / median / max of the cold start and of its parts (spawn → the api's `api
//! ready` log line, → its first `GET /next`, first invocation), the median warm latency, the
//! trained model's load time the api logs itself, and an in-process breakdown of what opening
//! the system costs ([`twin_fn_api::app`] and its pieces, timed in this process, where ONNX
//! Runtime and OpenCV are already loaded). Numbers only: nothing here asserts a speed. Moto on
//! loopback answers S3 far faster than S3 does from a Lambda, and this machine is not a Lambda
//! (no image pull, no firecracker start, no `/opt` on a cold EFS-less disk): read the numbers as
//! the process's own share of a cold start.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use twin_app::gallery::{DatasetWriter, GalleryView};
use twin_app::import::Import;
use twin_app::Engines;
use twin_core::gallery::Gallery;
use twin_core::store::ObjectStore;
use twin_faces::pipeline::{FacePipeline, PipelineOptions};
use twin_fn_api::ApiSettings;
use twin_model::embed::{Embedder, EmbedderOptions};
use twin_model::models;
use twin_model::train::TrainOptions;
use twin_tests::events::api_gateway_v2;
use twin_tests::lambda::{function_arn, lambda_command, FunctionProcess, Logs, Post, RuntimeApi};
use twin_tests::moto::{self, Moto};
use twin_tests::synthetic::{self, Rng};
use twin_tests::{bench_requested, data_dir, median, repo_root, require_backbone, SETUP_HINT};

/// Cold starts.
const RUNS: usize = 5;
/// Warm invocations after each cold start.
const WARM: usize = 5;
/// Identities of `data/faces` in the bucket's gallery.
const GALLERY: [&str; 3] = ["Barack_Obama", "Jerry_Seinfeld", "Madonna"];
/// Synthetic identities committed beside them (one crop each, so training leaves them out).
const SYNTHETIC: usize = 100_000;
/// The photo matched, under `data/media`.
const PHOTO: &str = "lin-manuel-miranda.png";
/// The template's `ApiMemorySize` default (only reported to the function; nothing limits it).
const MEMORY_MB: u64 = 2048;
/// The template's `ApiTimeout` default: the invocation deadline handed out.
const TIMEOUT: Duration = Duration::from_secs(29);
/// How long a run may take before it is called stuck.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// In-process repetitions of each piece of opening.
const IN_PROCESS: usize = 3;
const FUNCTION_NAME: &str = "twin-api";

fn main() {
    if !bench_requested("api_cold_start") {
        return;
    }
    let backbone = require_backbone();
    let models_dir = backbone
        .parent()
        .expect("the backbone is in the models folder")
        .to_path_buf();
    let ort = twin_tests::runtime()
        .ort_library
        .filter(|p| p.is_file())
        .unwrap_or_else(|| panic!("ONNX Runtime is missing; {SETUP_HINT}"));
    let data = data_dir();

    let moto = Moto::start();
    let sys = moto.system(30);
    let aws = sys.aws;
    let setup = Instant::now();
    let (gallery_rows, model_version, promoted_by_gate) = fill_bucket(&aws, &models_dir, &data);
    let setup_s = setup.elapsed().as_secs_f64();

    let build = Instant::now();
    let api = build_api();
    let build_s = build.elapsed().as_secs_f64();

    let settings = ApiSettings {
        models_dir: models_dir.clone(),
        threads: 1,
        poll: Duration::from_secs(60),
        api_key: None,
    };
    let in_process = in_process_breakdown(&aws, &settings, &models_dir);

    let photo = std::fs::read(data.join("media").join(PHOTO))
        .unwrap_or_else(|e| panic!("cannot read data/media/{PHOTO}: {e}"));
    let event = api_gateway_v2("POST", "/v1/match", "image/png", &photo, None);
    let env = FunctionEnv {
        aws: aws.config().clone(),
        endpoint: moto.endpoint().to_string(),
        models_dir: models_dir.clone(),
        ort,
    };
    let mut runs = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let run = cold_run(&api, &env, &event);
        eprintln!(
            "api_cold_start: run {}/{RUNS}: cold start {:.0} ms, warm {:.0} ms",
            i + 1,
            ms(run.cold),
            median(run.warm.iter().map(|d| ms(*d)).collect())
        );
        runs.push(run);
    }

    let col = |f: &dyn Fn(&Run) -> Option<Duration>| -> Vec<f64> {
        runs.iter().filter_map(f).map(ms).collect()
    };
    println!();
    println!(
        "api cold start: {} spawned against a local Lambda Runtime API emulator, S3/SQS on moto (loopback)",
        api.display()
    );
    println!(
        "gallery: {} and {SYNTHETIC} synthetic identities ({gallery_rows} crops), model {model_version} trained on it and promoted ({}); set up in {setup_s:.0} s; api binary built/checked in {build_s:.1} s",
        GALLERY.join(", "),
        if promoted_by_gate {
            "by the gate"
        } else {
            "by hand: the gate kept the backbone"
        }
    );
    println!(
        "first invocation: POST /v1/match, data/media/{PHOTO} ({} bytes) in an API Gateway v2 event; TWIN_THREADS 1, {MEMORY_MB} MB reported",
        photo.len()
    );
    println!(
        "{:<52} {:>8} {:>8} {:>8}",
        "stage (ms)", "min", "median", "max"
    );
    let line = |name: &str, v: Vec<f64>| {
        if v.is_empty() {
            println!("{name:<52} {:>8} {:>8} {:>8}", "-", "-", "-");
            return;
        }
        let mut s = v.clone();
        s.sort_by(f64::total_cmp);
        println!(
            "{:<52} {:>8.0} {:>8.0} {:>8.0}",
            name,
            s[0],
            median(v),
            s[s.len() - 1]
        );
    };
    line(
        &format!("cold start: spawn → first response ({RUNS} runs)"),
        col(&|r| Some(r.cold)),
    );
    line("  spawn → `api ready` logged", col(&|r| r.ready));
    line(
        "  spawn → first GET /next (init done)",
        col(&|r| Some(r.first_next)),
    );
    line(
        "  first invocation (event handed out → response)",
        col(&|r| Some(r.first_invoke)),
    );
    line(
        "  trained model load + self-check (the api's log `ms`)",
        runs.iter()
            .filter_map(|r| r.model_load_ms)
            .map(|v| v as f64)
            .collect(),
    );
    let warm: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.warm.iter().map(|d| ms(*d)))
        .collect();
    line(
        &format!("warm invocation ({} calls, {WARM} per run)", warm.len()),
        warm,
    );
    println!(
        "in process (this bench, ONNX Runtime and OpenCV already loaded; median of {IN_PROCESS}):"
    );
    for (name, v) in in_process {
        line(&format!("  {name}"), v);
    }
    if let Some(mb) = runs.iter().filter_map(|r| r.peak_rss_mb).reduce(f64::max) {
        println!("peak RSS of the api process (VmHWM, largest of the runs): {mb:.0} MB");
    }
}

/// Milliseconds.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median (mean of the middle two for an even count).
/// Imports [`GALLERY`] into the bucket, trains and promotes a model. Returns the gallery's crops,
/// the model version and whether the gate promoted it.
fn fill_bucket(aws: &twin_aws::Aws, models_dir: &Path, data: &Path) -> (usize, u64, bool) {
    let work = tempfile::tempdir().expect("temporary folder");
    let faces = work.path().join("faces");
    std::fs::create_dir_all(&faces).expect("a faces folder");
    for p in GALLERY {
        std::os::unix::fs::symlink(data.join("faces").join(p), faces.join(p))
            .expect("a symlink to an identity folder");
    }
    let store: Arc<dyn ObjectStore> = Arc::new(aws.store());
    let engines = Engines::open(models_dir, 2)
        .unwrap_or_else(|e| panic!("cannot open the engines: {e}; {SETUP_HINT}"));
    let gallery = Arc::new(GalleryView::load(store.clone()).expect("read the dataset"));
    let import = Import::new(
        store.clone(),
        engines.photos,
        engines.backbone,
        Arc::new(DatasetWriter::new(store.clone())),
        gallery,
    );
    eprintln!(
        "api_cold_start: importing {} into the bucket",
        GALLERY.join(", ")
    );
    let summary = import
        .folder(&faces, &|_, _| {})
        .unwrap_or_else(|e| panic!("cannot import the gallery: {e}"));
    assert_eq!(summary.identities, GALLERY.len(), "{summary:?}");
    eprintln!("api_cold_start: committing {SYNTHETIC} synthetic identities");
    let writer = DatasetWriter::new(store.clone());
    for batch in synthetic::batches(SYNTHETIC, 1, &mut Rng(42)) {
        writer
            .commit(synthetic::DIM, &batch)
            .unwrap_or_else(|e| panic!("cannot commit synthetic identities: {e}"));
    }
    // One segment, as a gallery this size is after its compaction.
    writer.compact().expect("compact the gallery");
    let backbone = std::fs::read(require_backbone()).expect("the backbone");
    eprintln!("api_cold_start: training a model");
    let outcome = models::train_and_gate(
        &*store,
        &backbone,
        &TrainOptions {
            threads: 1,
            ..Default::default()
        },
        &|_, _| {},
    )
    .unwrap_or_else(|e| panic!("cannot train: {e}"));
    let m = &outcome.metrics;
    if !m.promoted {
        models::promote(&*store, m.version)
            .unwrap_or_else(|e| panic!("cannot promote model {}: {e}", m.version));
    }
    let rows = twin_core::dataset::load_current(&*store)
        .expect("read the dataset")
        .map(|s| Gallery::from_snapshot(s).rows())
        .unwrap_or(0);
    (rows, m.version, m.promoted)
}

/// Builds the api binary (with this bench's profile and features) and returns its path.
fn build_api() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Alone, as infra/Dockerfile builds it: with the function's own features (no video, so
    // neither OpenCV's videoio nor FFmpeg is linked), not those this bench unifies in.
    let args = [
        "build",
        "--profile",
        "bench",
        "-p",
        "twin-fn-api",
        "--bin",
        "api",
    ];
    eprintln!("api_cold_start: cargo {}", args.join(" "));
    let out = Command::new(cargo)
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("cannot run cargo");
    assert!(out.status.success(), "building the api failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "api")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no api executable")
}

/// What opening costs, timed in this process: each piece [`IN_PROCESS`] times.
fn in_process_breakdown(
    aws: &twin_aws::Aws,
    settings: &ApiSettings,
    models_dir: &Path,
) -> Vec<(String, Vec<f64>)> {
    let time = |f: &mut dyn FnMut()| -> Vec<f64> {
        (0..IN_PROCESS)
            .map(|_| {
                let t = Instant::now();
                f();
                ms(t.elapsed())
            })
            .collect()
    };
    let config = aws.config().clone();
    let connect = time(&mut || {
        std::hint::black_box(twin_aws::Aws::connect(config.clone()).expect("clients"));
    });
    let whole = time(&mut || {
        let (api, _router) = twin_fn_api::app(aws, settings).expect("the api opens");
        assert!(api.models.version().is_some(), "no trained model serving");
    });
    let engines = time(&mut || {
        std::hint::black_box(Engines::open(models_dir, 1).expect("the engines open"));
    });
    let pipelines = time(&mut || {
        std::hint::black_box(
            FacePipeline::open(models_dir, &PipelineOptions::default()).expect("pipeline"),
        );
    });
    let embedder = time(&mut || {
        std::hint::black_box(
            Embedder::open(
                &models_dir.join(twin_core::paths::BACKBONE_FILE),
                &EmbedderOptions { threads: 1 },
            )
            .expect("embedder"),
        );
    });
    let store: std::sync::Arc<dyn twin_core::store::ObjectStore> = std::sync::Arc::new(aws.store());
    let gallery = time(&mut || {
        let v = twin_core::dataset::load_current_for_search(&store)
            .expect("read the dataset")
            .expect("a dataset");
        std::hint::black_box(Gallery::from_search(v));
    });
    vec![
        ("Aws::connect (SDK config)".into(), connect),
        ("twin_fn_api::app, whole (with the model)".into(), whole),
        ("  Engines::open (photos, backbone)".into(), engines),
        ("    FacePipeline::open (photos)".into(), pipelines),
        ("    Embedder::open (backbone)".into(), embedder),
        ("    dataset from S3 + Gallery".into(), gallery),
    ]
}

/// The function's environment, apart from the runtime API's address.
struct FunctionEnv {
    aws: twin_aws::AwsConfig,
    endpoint: String,
    models_dir: PathBuf,
    ort: PathBuf,
}

/// One cold start and the warm invocations after it.
struct Run {
    cold: Duration,
    ready: Option<Duration>,
    first_next: Duration,
    first_invoke: Duration,
    warm: Vec<Duration>,
    model_load_ms: Option<u64>,
    peak_rss_mb: Option<f64>,
}

fn cold_run(api: &Path, env: &FunctionEnv, event: &str) -> Run {
    let rt = RuntimeApi::start(&function_arn(FUNCTION_NAME), TIMEOUT);
    rt.queue("cold-0", event);
    let mut cmd = lambda_command(api, &rt, FUNCTION_NAME, MEMORY_MB);
    cmd.env("AWS_ACCESS_KEY_ID", moto::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", moto::SECRET_KEY)
        .env("AWS_ENDPOINT_URL", &env.endpoint)
        .env("TWIN_BUCKET", &env.aws.bucket)
        .env("TWIN_INGEST_QUEUE_URL", &env.aws.ingest_queue_url)
        .env("TWIN_TRAIN_QUEUE_URL", &env.aws.train_queue_url)
        .env("TWIN_MODEL_POLL_SECONDS", "60")
        .env("TWIN_MODELS_DIR", &env.models_dir)
        .env("ORT_DYLIB_PATH", &env.ort);
    let started = Instant::now();
    let mut process = FunctionProcess::spawn(cmd, started);
    let logs = process.logs().clone();
    let mut wait = |rt: &RuntimeApi| {
        rt.next_post(RUN_LIMIT, &mut process)
            .unwrap_or_else(|e| panic!("{e}"))
    };

    let (at, post) = wait(&rt);
    let cold = at - started;
    check_response(&post, "cold-0", &logs);
    let first_next = rt
        .first_next()
        .expect("a GET /next before the first response")
        - started;
    let first_invoke = at - rt.handed("cold-0");
    let mut warm = Vec::with_capacity(WARM);
    for i in 0..WARM {
        let id = format!("warm-{i}");
        rt.queue(&id, event);
        let (at, post) = wait(&rt);
        check_response(&post, &id, &logs);
        warm.push(at - rt.handed(&id));
    }
    let peak_rss_mb = peak_rss_mb(process.id());
    drop(process);
    rt.stop();
    let lines = logs.lines();
    let ready = lines
        .iter()
        .find(|(_, v)| v["fields"]["message"] == "api ready")
        .map(|(t, _)| *t);
    let model_load_ms = lines
        .iter()
        .find(|(_, v)| v["fields"]["message"] == "model loaded and serving")
        .and_then(|(_, v)| v["fields"]["ms"].as_u64());
    Run {
        cold,
        ready,
        first_next,
        first_invoke,
        warm,
        model_load_ms,
        peak_rss_mb,
    }
}

fn peak_rss_mb(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Checks that invocation `id` answered 200 with at least one face, from the trained model.
fn check_response(post: &Post, expected_id: &str, logs: &Logs) {
    let body = match post {
        Post::Response { id, body } if id == expected_id => body,
        Post::Response { id, .. } => panic!("a response to {id}, expected one to {expected_id}"),
        Post::Error { id, body } => panic!(
            "invocation {id} failed: {body}\nthe api's output:\n{}",
            logs.text()
        ),
        Post::InitError { body } => {
            panic!("init failed: {body}\nthe api's output:\n{}", logs.text())
        }
    };
    let res: Value = serde_json::from_slice(body).expect("a JSON API Gateway response");
    assert_eq!(res["statusCode"], 200, "{res}");
    assert_ne!(
        res["isBase64Encoded"], true,
        "a base64 answer where JSON was expected"
    );
    let answer: Value = serde_json::from_str(res["body"].as_str().expect("a body")).expect("JSON");
    let faces = answer["faces"].as_array().map_or(0, Vec::len);
    assert!(faces > 0, "no face in the answer: {answer}");
    assert!(
        answer["model_version"].as_u64().is_some(),
        "the trained model did not answer: {answer}"
    );
}
