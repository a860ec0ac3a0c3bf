//! Warm match latency: one 640×480 photo through [`Matching::match_photo`](twin_app::matching::Matching::match_photo), the work behind
//! `POST /v1/match`, on a gallery of a million crops.
//!
//! `cargo bench -p twin-tests --bench match_latency` first writes [`SYNTHETIC_ROWS`] synthetic
//! crops to a temporary data folder ([`PER_PERSON`] random embeddings of the backbone's length
//! for each of `SYNTHETIC_ROWS / PER_PERSON` identities, committed in batches through the
//! dataset writer the product uses and compacted, as `gallery_scale` builds its gallery; about
//! 20 s), then opens the local host ([`Local`]) on it (with the threads `twin serve` uses by
//! default), imports `data/faces` into it (about a minute), so that the gallery the match
//! searches holds the synthetic rows and the real people, cuts a 640×480 JPEG from `data/media/obama-480p.jpg` (centre crop of the 853×480 frame,
//! re-encoded at quality 90), warms up, and times [`CALLS`] calls. It prints p50 and p99, and
//! the same stages timed one by one with the core's public pieces and the same models (decode,
//! detection + landmarks, chip + embedding, gallery search), taken in turn with the whole call. The timed call is the request path
//! minus HTTP framing: the body the router hands to `match_photo` and the JSON it serialises
//! are not in it (this crate does not depend on tokio or tower to drive the router in process).
//! `TWIN_MATCH_ROWS=0` leaves the synthetic rows out (a quicker look at `data/faces` alone).
//! Numbers only: nothing here asserts a speed.

use std::io::Cursor;
use std::path::Path;
use std::time::Instant;

use image::{imageops, ImageFormat, RgbImage};
use twin_app::gallery::DatasetWriter;
use twin_app::local::{Local, LocalConfig};
use twin_core::media::MAX_PHOTO_BYTES;
use twin_core::store::LocalStore;
use twin_faces::imageio::{self, Limits};
use twin_faces::pipeline::{cut_chip, FacePipeline, PipelineOptions};
use twin_model::embed::{ChipBatch, Embedder, EmbedderOptions};
use twin_tests::synthetic::{self, Rng, DIM};
use twin_tests::{bench_requested, data_dir, require_backbone, SETUP_HINT};

/// A timed stage: its name and one call of it.
type Step<'a> = (&'static str, Box<dyn FnMut() + 'a>);

/// Timed calls.
const CALLS: usize = 50;
/// Untimed calls first.
const WARMUP: usize = 5;
/// Matches asked for per face (the API's default page of results).
const K: usize = 10;
/// Threads ONNX Runtime may use: `twin serve`'s default.
const THREADS: usize = 2;
/// The photo's size.
const WIDTH: u32 = 640;
const HEIGHT: u32 = 480;
/// The source photo, under `data/media`.
const SOURCE: &str = "obama-480p.jpg";
/// Synthetic crops in the gallery besides `data/faces` (`TWIN_MATCH_ROWS` overrides it).
const SYNTHETIC_ROWS: usize = 1_000_000;
/// Crops per synthetic identity.
const PER_PERSON: usize = 10;

/// Writes `rows` synthetic crops to the data folder `data` (random directions of length 0.6,
/// about a dlib descriptor's), in commits of [`synthetic::BATCH`] identities, then compacts them.
fn synthetic_gallery(data: &Path, rows: usize) {
    let store = std::sync::Arc::new(LocalStore::open(data).expect("the data folder"));
    let writer = DatasetWriter::new(store);
    let people = rows / PER_PERSON;
    for batch in synthetic::batches(people, PER_PERSON, &mut Rng(42)) {
        writer.commit(DIM, &batch).expect("a synthetic commit");
    }
    if people > 0 {
        writer.compact().expect("compaction");
    }
}

/// Value at fraction `p` of sorted samples (nearest rank: p99 of 50 samples is the largest).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Stats {
    p50: f64,
    p99: f64,
    mean: f64,
    min: f64,
}

fn stats(mut ms: Vec<f64>) -> Stats {
    ms.sort_by(f64::total_cmp);
    Stats {
        p50: percentile(&ms, 0.5),
        p99: percentile(&ms, 0.99),
        mean: ms.iter().sum::<f64>() / ms.len() as f64,
        min: ms[0],
    }
}

/// The 640×480 JPEG: a centre crop (scaled first if the source is smaller than the target).
fn photo_640x480(path: &Path) -> Vec<u8> {
    let src = image::open(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .to_rgb8();
    let scale = (WIDTH as f64 / src.width() as f64).max(HEIGHT as f64 / src.height() as f64);
    let src: RgbImage = if scale > 1.0 {
        imageops::resize(
            &src,
            (src.width() as f64 * scale).ceil() as u32,
            (src.height() as f64 * scale).ceil() as u32,
            imageops::FilterType::Triangle,
        )
    } else {
        src
    };
    let (x, y) = ((src.width() - WIDTH) / 2, (src.height() - HEIGHT) / 2);
    let crop = imageops::crop_imm(&src, x, y, WIDTH, HEIGHT).to_image();
    let mut out = Cursor::new(Vec::new());
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
    enc.encode_image(&crop).expect("encode the JPEG");
    let bytes = out.into_inner();
    assert_eq!(
        image::guess_format(&bytes).expect("a known format"),
        ImageFormat::Jpeg
    );
    bytes
}

fn vm_hwm_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn main() {
    if !bench_requested("match_latency") {
        return;
    }
    let backbone = require_backbone();
    let models_dir = backbone
        .parent()
        .expect("the backbone is in the models folder")
        .to_path_buf();
    let data = data_dir();
    let work = tempfile::tempdir().expect("temporary folder");
    let synthetic = std::env::var("TWIN_MATCH_ROWS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(SYNTHETIC_ROWS);
    let t = Instant::now();
    synthetic_gallery(&work.path().join("data"), synthetic);
    let synthetic_s = t.elapsed().as_secs_f64();
    let config = LocalConfig::new(work.path().join("data"), models_dir.clone(), THREADS);
    let system = Local::open_inline(&config)
        .unwrap_or_else(|e| panic!("cannot open the system: {e}; {SETUP_HINT}"));

    let t = Instant::now();
    let faces = data.join("faces");
    let summary = system
        .import
        .folder(&faces, &|done, total| {
            if done % 100 == 0 || done == total {
                eprintln!("match_latency: importing {done}/{total}");
            }
        })
        .unwrap_or_else(|e| panic!("cannot import {}: {e}", faces.display()));
    let import_s = t.elapsed().as_secs_f64();

    let photo = photo_640x480(&data.join("media").join(SOURCE));
    let first = system
        .matching
        .match_photo(&photo, K)
        .unwrap_or_else(|e| panic!("match failed on the {WIDTH}×{HEIGHT} photo: {e}"));
    assert_eq!((first.width, first.height), (WIDTH, HEIGHT));

    // The stages on their own, with the same models and options the system uses.
    let limits = Limits {
        max_bytes: MAX_PHOTO_BYTES as u64,
        ..Default::default()
    };
    let pipeline = FacePipeline::open(&models_dir, &PipelineOptions::default())
        .unwrap_or_else(|e| panic!("cannot open the face pipeline: {e}"));
    let embedder = Embedder::open(&backbone, &EmbedderOptions { threads: THREADS })
        .unwrap_or_else(|e| panic!("cannot open the embedder: {e}"));
    // The gallery the system searches.
    let gallery = system.gallery.current().expect("the gallery");
    let img = imageio::decode(&photo, &limits).expect("decode");
    let found = pipeline.find_faces_with(&img, false).expect("find faces");
    let chips: Vec<RgbImage> = found.iter().map(|f| cut_chip(&img, f)).collect();
    let embedded = {
        let mut b = ChipBatch::with_capacity(chips.len());
        for c in &chips {
            b.push(c).expect("a chip");
        }
        embedder.embed(&b).expect("embed")
    };
    // The whole call and each stage, interleaved call by call so that all see the same load.
    let mut steps: [Step; 5] = [
        (
            "whole",
            Box::new(|| {
                std::hint::black_box(system.matching.match_photo(&photo, K).expect("match"));
            }),
        ),
        (
            "decode",
            Box::new(|| {
                std::hint::black_box(imageio::decode(&photo, &limits).expect("decode"));
            }),
        ),
        (
            "detect",
            Box::new(|| {
                std::hint::black_box(pipeline.find_faces_with(&img, false).expect("find faces"));
            }),
        ),
        (
            "embed",
            Box::new(|| {
                let mut b = ChipBatch::with_capacity(found.len());
                for f in &found {
                    b.push(&cut_chip(&img, f)).expect("a chip");
                }
                std::hint::black_box(embedder.embed(&b).expect("embed"));
            }),
        ),
        (
            "search",
            Box::new(|| {
                for i in 0..embedded.len() {
                    std::hint::black_box(gallery.search(embedded.row(i), K, &|_| false));
                }
            }),
        ),
    ];
    for _ in 0..WARMUP {
        for (_, f) in steps.iter_mut() {
            f();
        }
    }
    let mut ms: [Vec<f64>; 5] = Default::default();
    for _ in 0..CALLS {
        for ((_, f), m) in steps.iter_mut().zip(&mut ms) {
            let t = Instant::now();
            f();
            m.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    drop(steps);
    let [whole, decode, detect, embed, search] = ms.map(stats);
    // The search again, call after call with no model run between: what it costs when the
    // models' threads are not competing with it for the cores.
    let alone = stats(
        (0..CALLS)
            .map(|_| {
                let t = Instant::now();
                for i in 0..embedded.len() {
                    std::hint::black_box(gallery.search(embedded.row(i), K, &|_| false));
                }
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    );

    println!();
    println!(
        "warm match latency: {WIDTH}×{HEIGHT} JPEG ({} bytes, centre crop of data/media/{SOURCE}), {} face(s), k = {K}",
        photo.len(),
        first.faces.len()
    );
    println!(
        "gallery: {synthetic} synthetic crops ({} identities, written and compacted in {synthetic_s:.0} s), then data/faces imported in {import_s:.0} s ({} photos in, {} rejected): {} identities, {} crops (dataset version {}); ONNX Runtime threads {THREADS}",
        synthetic / PER_PERSON,
        summary.imported,
        summary.rejected.values().sum::<usize>(),
        gallery.identities(),
        gallery.rows(),
        first.dataset_version
    );
    println!(
        "paths timed: Matching::match_photo (the work of POST /v1/match minus HTTP framing and JSON), then the router"
    );
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>8}",
        "stage", "p50 ms", "p99 ms", "mean ms", "min ms"
    );
    let line = |name: &str, s: &Stats| {
        println!(
            "{:<44} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            name, s.p50, s.p99, s.mean, s.min
        );
    };
    line(&format!("match_photo, whole ({CALLS} calls)"), &whole);
    line("  decode JPEG", &decode);
    line("  detect + landmarks (FacePipeline)", &detect);
    line("  chips + embed (ONNX Runtime)", &embed);
    line("  gallery search (exact, all crops)", &search);
    line("  gallery search, call after call", &alone);
    let parts = decode.p50 + detect.p50 + embed.p50 + search.p50;
    println!(
        "({CALLS} calls each after {WARMUP} warm-up calls, the whole call and the stages taken in turn (the search right after the embedding, as in a match), then the search alone; the stages' p50s add up to {parts:.2} ms; p99 of {CALLS} samples is the slowest one)"
    );
    // The same photo through the HTTP router, as `twin serve` and the api Lambda answer it.
    let http = http_latency(system.clone(), &photo);
    line(
        &format!("POST /v1/match through the router ({CALLS} calls)"),
        &http,
    );
    println!("(router: twin_http::router via tower oneshot, raw image/jpeg body, JSON answer read whole)");
    if let Some(mb) = vm_hwm_mb() {
        println!("peak RSS of this process (VmHWM): {mb:.0} MB");
    }
}

/// Warm latency of `POST /v1/match?k=10` through the axum router, in process.
fn http_latency(system: std::sync::Arc<Local>, photo: &[u8]) -> Stats {
    use tower::ServiceExt;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let config = twin_http::HttpConfig::new(twin_http::Uploads::Here(system.clone()));
    let router = twin_http::router(twin_http::Api::local(&system), config);
    let call = |router: axum::Router| {
        let req = axum::http::Request::post("/v1/match?k=10")
            .header("content-type", "image/jpeg")
            .body(axum::body::Body::from(photo.to_vec()))
            .expect("a request");
        rt.block_on(async move {
            let res = router.oneshot(req).await.expect("a response");
            assert!(res.status().is_success(), "match answered {}", res.status());
            axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .expect("the body")
        })
    };
    for _ in 0..WARMUP {
        call(router.clone());
    }
    let mut ms = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        std::hint::black_box(call(router.clone()));
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    stats(ms)
}
