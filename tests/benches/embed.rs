//! Embedding speed: our engine (ONNX Runtime, one thread) against dlib on the same chips.
//!
//! `cargo bench -p twin-tests --bench embed` cuts chips from a spread of `data/faces` with dlib
//! (`reference/dlib_oracle.py`), times our [`Embedder`] on them at batch 1 and batch 16, times
//! dlib's `compute_face_descriptor` on the same chips, and prints one table. Our timing includes
//! building the batch from decoded chips (dlib's includes converting its numpy input). Numbers
//! only: nothing here asserts a speed.

use std::time::{Duration, Instant};

use image::RgbImage;
use twin_model::embed::{ChipBatch, Embedder, EmbedderOptions};
use twin_tests::{
    bench_requested, face_crops, load_chip, median, require_backbone, CutOptions, Oracle,
    SETUP_HINT,
};

/// Chips timed (the first this many dlib finds; a multiple of 16).
const CHIPS: usize = 64;
/// Crops taken per identity to find them.
const CROPS_PER_IDENTITY: usize = 3;
/// Batch sizes timed, for both engines.
const BATCHES: [usize; 2] = [1, 16];
/// Threads our engine may use.
const THREADS: usize = 1;
/// Passes over the chips for our engine (it is fast; more passes steady the number).
const OUR_ROUNDS: usize = 5;
/// Passes over the chips for dlib.
const DLIB_ROUNDS: usize = 1;
/// Warm-up calls before timing, for both.
const WARMUP: usize = 3;

struct Row {
    engine: &'static str,
    batch: usize,
    chips: usize,
    chips_per_s: f64,
    ms_median: f64,
    cpu_per_wall: Option<f64>,
}

/// CPU seconds (user + system, all threads) this process has used, from `/proc/self/stat`
/// (Linux; clock ticks are USER_HZ = 100). `None` elsewhere.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

fn embed_group(embedder: &Embedder, group: &[RgbImage]) {
    let mut batch = ChipBatch::with_capacity(group.len());
    for chip in group {
        batch.push(chip).expect("a 150×150 chip");
    }
    let out = embedder
        .embed(&batch)
        .unwrap_or_else(|e| panic!("embedding failed: {e}"));
    assert_eq!(out.len(), group.len());
    std::hint::black_box(out);
}

fn time_ours(embedder: &Embedder, chips: &[RgbImage], batch: usize) -> Row {
    for group in chips.chunks(batch).take(WARMUP) {
        embed_group(embedder, group);
    }
    let mut per_chip_ms = Vec::new();
    let mut total = Duration::ZERO;
    let mut done = 0;
    let cpu0 = process_cpu_seconds();
    let wall0 = Instant::now();
    for _ in 0..OUR_ROUNDS {
        for group in chips.chunks(batch) {
            let t = Instant::now();
            embed_group(embedder, group);
            let dt = t.elapsed();
            total += dt;
            done += group.len();
            per_chip_ms.push(dt.as_secs_f64() * 1000.0 / group.len() as f64);
        }
    }
    let wall = wall0.elapsed().as_secs_f64();
    let cpu_per_wall = match (cpu0, process_cpu_seconds()) {
        (Some(a), Some(b)) => Some((b - a) / wall),
        _ => None,
    };
    Row {
        engine: "twin-core (ONNX Runtime)",
        batch,
        chips: done,
        chips_per_s: done as f64 / total.as_secs_f64(),
        ms_median: median(per_chip_ms),
        cpu_per_wall,
    }
}

fn main() {
    if !bench_requested("embed") {
        return;
    }

    let oracle = Oracle::require();
    let backbone = require_backbone();
    let embedder =
        Embedder::open(&backbone, &EmbedderOptions { threads: THREADS }).unwrap_or_else(|e| {
            panic!(
                "cannot open the embedding engine on {}: {e}; {SETUP_HINT}",
                backbone.display()
            )
        });

    // Chips cut by dlib from tight crops, chips only (no descriptors needed here).
    let work = tempfile::tempdir().expect("temporary folder");
    let crops = face_crops(CROPS_PER_IDENTITY);
    let cut = oracle
        .spawn_cut(
            work.path(),
            &crops,
            &CutOptions {
                descriptors: false,
                ..CutOptions::tight_crops()
            },
        )
        .wait();
    let chosen: Vec<_> = cut
        .chips
        .iter()
        .take(CHIPS)
        .map(|c| c.chip_png.clone())
        .collect();
    assert!(
        chosen.len() >= 16,
        "dlib found only {} faces in {} crops",
        chosen.len(),
        crops.len()
    );
    let chips: Vec<RgbImage> = chosen.iter().map(|p| load_chip(p)).collect();

    let mut rows: Vec<Row> = BATCHES
        .iter()
        .map(|&b| time_ours(&embedder, &chips, b))
        .collect();
    let dlib = oracle.bench(&chosen, &BATCHES, WARMUP, DLIB_ROUNDS);
    for t in &dlib.results {
        rows.push(Row {
            engine: "dlib compute_face_descriptor",
            batch: t.batch,
            chips: t.chips,
            chips_per_s: t.chips_per_s,
            ms_median: t.ms_per_chip_median,
            cpu_per_wall: Some(t.cpu_per_wall),
        });
    }
    let dlib_single = dlib
        .results
        .iter()
        .find(|t| t.batch == 1)
        .map(|t| t.chips_per_s);

    println!();
    println!(
        "embedding {} distinct dlib chips (150×150) from data/faces; our engine: {THREADS} thread, {OUR_ROUNDS} passes; dlib {} (AVX {}): {DLIB_ROUNDS} pass",
        chips.len(),
        dlib.dlib_version,
        if dlib.dlib_avx { "on" } else { "off" }
    );
    println!(
        "{:<30} {:>5} {:>7} {:>10} {:>14} {:>10} {:>16}",
        "engine", "batch", "chips", "chips/s", "median ms/chip", "CPU/wall", "vs dlib batch 1"
    );
    for r in &rows {
        let ratio = dlib_single.map_or("-".to_string(), |d| format!("{:.1}×", r.chips_per_s / d));
        let cpu = r
            .cpu_per_wall
            .map_or("-".to_string(), |c| format!("{c:.2}"));
        println!(
            "{:<30} {:>5} {:>7} {:>10.1} {:>14.2} {:>10} {:>16}",
            r.engine, r.batch, r.chips, r.chips_per_s, r.ms_median, cpu, ratio
        );
    }
    println!("(CPU/wall: process CPU time over wall time while timing; 1.00 = one busy core)");
    for &b in &BATCHES {
        let ours = rows
            .iter()
            .find(|r| r.engine.starts_with("twin") && r.batch == b);
        let theirs = dlib.results.iter().find(|t| t.batch == b);
        if let (Some(o), Some(t)) = (ours, theirs) {
            println!(
                "ours/dlib at batch {b}: {:.1}×",
                o.chips_per_s / t.chips_per_s
            );
        }
    }
}
