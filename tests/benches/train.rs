//! Training and reload times.
//!
//! `cargo bench -p twin-tests --bench train` prints:
//! 1. the training job on `data/faces` (imported first into a temporary data folder, not
//!    timed): the whole `train_and_gate` run (split, head, three evaluations, ONNX composition,
//!    writes) and the head's training alone, with the held-out numbers;
//! 2. the head on synthetic embeddings, 10 000 identities × 20 (128-d, unit rows around random
//!    centres): split, training and the held-out evaluation, timed apart;
//! 3. reload: a running system polling `models/CURRENT` every 50 ms, from the pointer's change
//!    to the first match answered by the new model (load, self-check and swap included).
//!
//! Numbers only: nothing here asserts a speed.

use std::time::{Duration, Instant};

use twin_app::local::{Local, LocalConfig};
use twin_core::dataset::{Identity, Manifest, Snapshot};
use twin_core::keys::{model_key, MODELS_CURRENT};
use twin_core::store::{Condition, LocalStore, ObjectStore};
use twin_model::models;
use twin_model::train::{self, TrainOptions};
use twin_tests::{bench_requested, data_dir, require_backbone, SETUP_HINT};

fn main() {
    if !bench_requested("train") {
        return;
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let backbone_path = require_backbone();
    let backbone = std::fs::read(&backbone_path).expect(SETUP_HINT);
    let models_dir = backbone_path.parent().unwrap().to_path_buf();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");

    // 1. data/faces.
    let mut config = LocalConfig::new(data.clone(), models_dir.clone(), threads);
    config.model_poll = Duration::from_millis(50);
    let t = Instant::now();
    let sys = Local::open_inline(&config).expect(SETUP_HINT);
    let summary = sys
        .import
        .folder(&data_dir().join("faces"), &|_, _| {})
        .expect("import data/faces");
    drop(sys);
    println!(
        "data/faces: {} images in {} identities imported in {:.1} s (not timed below)",
        summary.imported,
        summary.identities,
        t.elapsed().as_secs_f64()
    );
    let store = LocalStore::open(&data).unwrap();
    let options = TrainOptions {
        threads,
        ..Default::default()
    };
    let t = Instant::now();
    let outcome = models::train_and_gate(&store, &backbone, &options, &|_, _| {}).unwrap();
    let whole = t.elapsed().as_secs_f64();
    let m = outcome.metrics;
    let snapshot = twin_core::dataset::load_current(&store).unwrap().unwrap();
    let t = Instant::now();
    let split = train::split(&snapshot, &options);
    let head = train::train_head(&split, &options, &|_, _| {});
    let head_only = t.elapsed().as_secs_f64();
    assert_eq!(head.labels.len(), m.identities);
    println!(
        "data/faces training ({} threads): whole job {whole:.2} s, split + head {head_only:.3} s; \
         {} identities, {} train / {} held-out crops; held-out top-1/top-5: model {:.2}/{:.2} %, \
         gallery baseline {:.2}/{:.2} %; {}",
        threads,
        m.identities,
        m.train_rows,
        m.held_out_rows,
        100.0 * m.model.top1,
        100.0 * m.model.top5,
        100.0 * m.baseline.top1,
        100.0 * m.baseline.top5,
        if m.promoted {
            "promoted"
        } else {
            "not promoted"
        },
    );

    // 3. reload (before the synthetic run, while the data folder is at hand).
    let sys = Local::open(config).expect(SETUP_HINT);
    let photo = std::fs::read(data_dir().join("media/obama.jpg")).unwrap();
    let good = store.get(&model_key(m.version)).unwrap().unwrap().data;
    let mut reloads = Vec::new();
    for round in 0..5 {
        // A fresh version each round, so the server has something new to load.
        let n = m.version + 1 + round;
        for f in ["labels.json", "metrics.json"] {
            let body = store
                .get(&format!("models/{}/{f}", m.version))
                .unwrap()
                .unwrap()
                .data;
            store
                .put(&format!("models/{n}/{f}"), &body, Condition::None)
                .unwrap();
        }
        store.put(&model_key(n), &good, Condition::None).unwrap();
        let t = Instant::now();
        store
            .put(MODELS_CURRENT, n.to_string().as_bytes(), Condition::None)
            .unwrap();
        loop {
            let r = sys.matching.match_photo(&photo, 5).unwrap();
            if r.model_version == Some(n) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "model {n} never served"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        reloads.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    reloads.sort_by(f64::total_cmp);
    println!(
        "reload (polling every 50 ms): CURRENT change → first answer by the new model: median {:.0} ms, min {:.0} ms, max {:.0} ms over {} reloads",
        reloads[reloads.len() / 2],
        reloads[0],
        reloads[reloads.len() - 1],
        reloads.len()
    );
    drop(sys);

    // 2. synthetic.
    let (ids, per, dim) = (10_000, 20, 128);
    let t = Instant::now();
    let embeddings = train::synthetic(ids, per, dim, 1.2, 42);
    let mut manifest = Manifest::empty(dim);
    manifest.rows = ids * per;
    manifest.identities = (0..ids)
        .map(|i| Identity {
            slug: format!("id{i:05}"),
            display_name: format!("Identity {i}"),
            crops: (0..per)
                .map(|k| format!("crops/id{i:05}/u/{k}.png"))
                .collect(),
            uploads: vec!["u".into()],
        })
        .collect();
    let snapshot = Snapshot {
        manifest,
        embeddings,
    };
    let made = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let split = train::split(&snapshot, &options);
    let split_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let head = train::train_head(&split, &options, &|_, _| {});
    let train_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let acc = train::evaluate(&split.held, dim, split.labels.len(), &|x| head.scores(x));
    let protos = train::prototypes(&split);
    let base = train::Head {
        labels: split.labels.clone(),
        dim,
        weights: protos,
    };
    let baseline = train::evaluate(&split.held, dim, split.labels.len(), &|x| base.scores(x));
    let eval_s = t.elapsed().as_secs_f64();
    println!(
        "synthetic {ids} identities × {per} embeddings ({dim}-d, {threads} threads, {} steps of {} rows): \
         data {made:.1} s, split {split_s:.2} s, training {train_s:.1} s, evaluation (model + baseline, {} held-out) {eval_s:.1} s; \
         held-out top-1 model {:.2} %, baseline {:.2} %",
        options.steps,
        options.batch,
        split.held.len(),
        100.0 * acc.top1,
        100.0 * baseline.top1
    );
}
