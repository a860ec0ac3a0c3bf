//! Exact search speed: our top-k against faiss's `IndexFlatIP` on the same vectors, in one run.
//!
//! `cargo bench -p twin-tests --bench search` makes random unit 128-d vectors (fixed seed; unit
//! length, so inner product and Euclidean distance rank alike) for galleries of 10 k, 100 k and
//! 1 M rows plus 100 queries, writes them to a temporary folder as raw little-endian `f32`, and
//! starts `reference/faiss_bench.py` (the venv's Python, faiss-cpu) on the same files. Then it
//! times the top-10 of every query, alternating between the engines so that all see the same
//! machine load:
//! - `batch`: all 100 queries in one call (ours: [`top_k_ip_batch`], a blocked matrix product),
//!   engines alternating round by round;
//! - `single`: one query per call, as `/v1/match` searches (ours: [`top_k_ip`]), engines
//!   alternating query by query (faiss's time is taken in Python around `index.search`, so it
//!   includes the binding's few microseconds per call).
//!
//! faiss runs three ways, each labelled: one thread as installed (faiss-cpu 1.15 searches a
//! batch below 128 000 queries with its own SIMD loop, the same as one query at a time); one
//! thread with its BLAS path forced (`distance_compute_blas_threshold` 20, the old default:
//! OpenBLAS `sgemm` and a heap per query), with OpenBLAS told its best kernel for this processor
//! when it picks a worse one (the OpenBLAS 0.3.15 inside faiss-cpu does not know recent Xeons and
//! falls back to an SSE3 kernel); and faiss's default thread count, as installed. Ours runs on
//! this thread. `OPENBLAS_CORETYPE` and `OPENBLAS_L2_SIZE` inherited from the environment are
//! removed for the faiss commands (only the forced variant sets the first). The ratio ours/faiss
//! is taken against the faster one-thread faiss. The run prints each engine's agreement with our
//! ids, and peak memory (ours: `VmHWM`, reset per size; faiss: `ru_maxrss` of its process).
//! Numbers only: nothing here asserts a speed.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use serde_json::Value;
use twin_search::{top_k_ip, top_k_ip_batch, top_k_isa, PackedRows};
use twin_tests::{bench_requested, median, SETUP_HINT};

/// Vector length.
const DIM: usize = 128;
/// Results per query.
const K: usize = 10;
/// Queries per round.
const QUERIES: usize = 100;
/// Seed of the vectors (each size adds its row count).
const SEED: u64 = 0x7717_5EED;
/// faiss's BLAS threshold for the forced-BLAS variant (faiss's default before 1.15's 128 000).
const BLAS_THRESHOLD: usize = 20;
/// Gallery rows, with the rounds of the batch and the single-query modes at that size.
const SIZES: [(usize, usize, usize); 3] = [(10_000, 30, 5), (100_000, 10, 3), (1_000_000, 5, 2)];

/// SplitMix64: a small, fixed-seed generator (good enough for benchmark data).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// `rows` Gaussian vectors scaled to unit length (uniform on the sphere), row-major.
fn unit_vectors(rows: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    let mut out = vec![0f32; rows * DIM];
    for row in out.chunks_exact_mut(DIM) {
        for pair in row.chunks_exact_mut(2) {
            // Box–Muller: two independent standard normals.
            let (u, v) = (rng.unit(), rng.unit());
            let r = (-2.0 * u.ln()).sqrt();
            let t = std::f64::consts::TAU * v;
            pair[0] = (r * t.cos()) as f32;
            pair[1] = (r * t.sin()) as f32;
        }
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
    out
}

fn write_f32(path: &Path, values: &[f32]) {
    let file =
        File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    let mut w = BufWriter::with_capacity(1 << 20, file);
    for v in values {
        w.write_all(&v.to_le_bytes()).expect("write vectors");
    }
    w.flush().expect("write vectors");
}

fn read_i64(path: &Path) -> Vec<i64> {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect()
}

/// A field of `/proc/self/status` in kB.
fn status_kb(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Resets `VmHWM` to the current RSS (Linux `clear_refs` value 5). False when not possible.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Timings of one engine in one mode at one size.
#[derive(Default)]
struct Timing {
    /// ms per query: one sample per query (single) or per round (batch: round time / queries).
    per_query_ms: Vec<f64>,
    wall_ms: f64,
    cpu_ms: f64,
}

impl Timing {
    fn add(&mut self, samples: impl IntoIterator<Item = f64>, wall_ms: f64, cpu_ms: f64) {
        self.per_query_ms.extend(samples);
        self.wall_ms += wall_ms;
        self.cpu_ms += cpu_ms;
    }
}

/// How far two result lists agree.
#[derive(Debug, Clone, Copy)]
struct Agreement {
    /// Queries whose top-k ids are the same set.
    same_set: usize,
    /// Queries whose top-k ids are the same, in the same order.
    same_order: usize,
    /// Queries compared.
    queries: usize,
}

fn agreement(ours: &[Vec<(usize, f32)>], theirs: &[i64]) -> Agreement {
    let mut a = Agreement {
        same_set: 0,
        same_order: 0,
        queries: ours.len(),
    };
    for (q, row) in ours.iter().enumerate() {
        let mine: Vec<i64> = row.iter().map(|p| p.0 as i64).collect();
        let other = &theirs[q * K..(q + 1) * K];
        if mine == other {
            a.same_order += 1;
        }
        let (mut x, mut y) = (mine.clone(), other.to_vec());
        x.sort_unstable();
        y.sort_unstable();
        if x == y {
            a.same_set += 1;
        }
    }
    a
}

/// One faiss process serving commands (see `reference/faiss_bench.py`).
struct Faiss {
    label: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    setup: Value,
    ids_prefix: PathBuf,
}

impl Faiss {
    fn spawn(
        label: &str,
        dir: &Path,
        threads: usize,
        coretype: Option<&str>,
        blas_threshold: Option<usize>,
    ) -> Faiss {
        let python = twin_tests::venv_tool("python");
        assert!(
            python.is_file(),
            "the Python venv is missing ({} does not exist); {SETUP_HINT}",
            python.display()
        );
        let script = twin_tests::repo_root()
            .join("tests")
            .join("reference")
            .join("faiss_bench.py");
        let ids_prefix = dir.join(format!("ids-{}", label.replace(' ', "_")));
        let mut cmd = Command::new(&python);
        cmd.arg(&script)
            .arg("--db")
            .arg(dir.join("db.f32"))
            .arg("--queries")
            .arg(dir.join("queries.f32"))
            .arg("--dim")
            .arg(DIM.to_string())
            .arg("--k")
            .arg(K.to_string())
            .arg("--threads")
            .arg(threads.to_string())
            .arg("--ids-prefix")
            .arg(&ids_prefix)
            .env_remove("OPENBLAS_CORETYPE")
            .env_remove("OPENBLAS_L2_SIZE")
            .env_remove("OMP_NUM_THREADS")
            .env_remove("OPENBLAS_NUM_THREADS");
        if let Some(core) = coretype {
            cmd.env("OPENBLAS_CORETYPE", core);
        }
        if let Some(t) = blas_threshold {
            cmd.arg("--blas-threshold").arg(t.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SETUP_HINT}", python.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut f = Faiss {
            label: label.to_string(),
            child,
            stdin,
            stdout,
            setup: Value::Null,
            ids_prefix,
        };
        f.setup = f.read();
        f
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        let n = self
            .stdout
            .read_line(&mut line)
            .expect("read from faiss_bench.py");
        if n == 0 {
            let status = self.child.wait().expect("wait for faiss_bench.py");
            panic!(
                "faiss_bench.py ({}) stopped ({status}); if faiss is missing: {SETUP_HINT}",
                self.label
            );
        }
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("cannot parse faiss_bench.py output ({e}): {line}"))
    }

    fn ask(&mut self, cmd: &str) -> Value {
        writeln!(self.stdin, "{cmd}").expect("write to faiss_bench.py");
        self.stdin.flush().expect("write to faiss_bench.py");
        self.read()
    }

    fn core(&self) -> String {
        self.setup["openblas"]["corename"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    }

    fn ids_path(&self, mode: &str) -> PathBuf {
        PathBuf::from(format!("{}.{mode}.i64", self.ids_prefix.display()))
    }

    fn ids(&self, mode: &str) -> Vec<i64> {
        read_i64(&self.ids_path(mode))
    }

    /// Stops the process; its peak RSS in kB.
    fn quit(mut self) -> u64 {
        let v = self.ask("quit");
        self.child.wait().expect("wait for faiss_bench.py");
        v["peak_rss_kb"].as_u64().unwrap_or(0)
    }
}

/// The OpenBLAS kernel that suits this processor best, by its instruction sets.
fn best_openblas_core() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Some("SkylakeX");
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            return Some("Haswell");
        }
    }
    None
}

/// Which engine a printed line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Ours on [`PackedRows`]: the line the ratios are taken from.
    Ours,
    /// Ours on the rows as given ([`top_k_ip`], [`top_k_ip_batch`]).
    OursRows,
    /// A one-thread faiss: compared with ours in the summary.
    FaissOneThread,
    /// faiss with its default threads.
    FaissThreads,
}

/// One printed line.
struct Row {
    n: usize,
    mode: &'static str,
    engine: String,
    kind: Kind,
    p50: f64,
    mean: f64,
    cpu_per_wall: Option<f64>,
    /// Agreement of its ids with ours (packed).
    agree: Option<Agreement>,
    peak_mb: f64,
}

fn row(n: usize, mode: &'static str, engine: String, kind: Kind, t: &Timing) -> Row {
    Row {
        n,
        mode,
        engine,
        kind,
        p50: median(t.per_query_ms.clone()),
        mean: mean(&t.per_query_ms),
        cpu_per_wall: (t.cpu_ms > 0.0).then(|| t.cpu_ms / t.wall_ms),
        agree: None,
        peak_mb: 0.0,
    }
}

/// Times `f` once: its result and milliseconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64() * 1e3)
}

/// What one size printed above the table.
struct SizeNote {
    faiss: String,
    pack_ms: f64,
    packed_mb: f64,
}

fn bench_size(
    n: usize,
    batch_rounds: usize,
    single_rounds: usize,
    rows: &mut Vec<Row>,
) -> SizeNote {
    let peak_reset = reset_peak_rss();
    let db = unit_vectors(n, SEED + n as u64);
    let queries = unit_vectors(QUERIES, SEED + 1);
    let dir = tempfile::tempdir().expect("temporary folder");
    write_f32(&dir.path().join("db.f32"), &db);
    write_f32(&dir.path().join("queries.f32"), &queries);
    // Our index: one packed copy of the rows (as faiss's IndexFlat copies them in `add`).
    let (packed, pack_ms) = timed(|| PackedRows::from_rows(&db, DIM));

    // faiss as installed (one thread), with its BLAS path on the best kernel, and multi-threaded.
    let mut faiss = vec![Faiss::spawn("1 thread", dir.path(), 1, None, None)];
    let detected = faiss[0].core();
    let forced = best_openblas_core().filter(|c| !c.eq_ignore_ascii_case(&detected));
    let blas_label = format!("1 thread, sgemm {}", forced.unwrap_or(&detected));
    faiss.push(Faiss::spawn(
        &blas_label,
        dir.path(),
        1,
        forced,
        Some(BLAS_THRESHOLD),
    ));
    faiss.push(Faiss::spawn("default threads", dir.path(), 0, None, None));
    let setup = faiss[0].setup.clone();

    // Warm-up for ours (every loop), then alternate.
    std::hint::black_box(packed.top_k_ip_batch(&queries, K));
    std::hint::black_box(top_k_ip_batch(&db, DIM, &queries, K));
    for q in queries.chunks_exact(DIM).take(3) {
        std::hint::black_box(packed.top_k_ip(q, K));
        std::hint::black_box(top_k_ip(&db, DIM, q, K));
    }

    // All queries per call, alternating engines round by round.
    let mut ours_batch = Timing::default();
    let mut rows_batch = Timing::default();
    let mut theirs_batch: Vec<Timing> = faiss.iter().map(|_| Timing::default()).collect();
    let mut ours_batch_ids = Vec::new();
    let mut rows_batch_ids = Vec::new();
    for _ in 0..batch_rounds {
        let (res, ms) = timed(|| packed.top_k_ip_batch(&queries, K));
        ours_batch.add([ms / QUERIES as f64], ms, 0.0);
        ours_batch_ids = res;
        let (res, ms) = timed(|| top_k_ip_batch(&db, DIM, &queries, K));
        rows_batch.add([ms / QUERIES as f64], ms, 0.0);
        rows_batch_ids = res;
        for (f, t) in faiss.iter_mut().zip(&mut theirs_batch) {
            let v = f.ask("batch");
            let wall = v["wall_ms"].as_f64().expect("wall_ms");
            t.add(
                [wall / QUERIES as f64],
                wall,
                v["cpu_ms"].as_f64().expect("cpu_ms"),
            );
        }
    }

    // One query per call, alternating engines query by query.
    let mut ours_single = Timing::default();
    let mut rows_single = Timing::default();
    let mut theirs_single = Timing::default();
    let mut ours_single_ids = vec![Vec::new(); QUERIES];
    let mut rows_single_ids = vec![Vec::new(); QUERIES];
    for _ in 0..single_rounds {
        for (i, q) in queries.chunks_exact(DIM).enumerate() {
            let (res, ms) = timed(|| packed.top_k_ip(q, K));
            ours_single.add([ms], ms, 0.0);
            ours_single_ids[i] = res;
            let (res, ms) = timed(|| top_k_ip(&db, DIM, q, K));
            rows_single.add([ms], ms, 0.0);
            rows_single_ids[i] = res;
            let v = faiss[0].ask(&format!("one {i}"));
            let wall = v["wall_ms"].as_f64().expect("wall_ms");
            theirs_single.add([wall], wall, v["cpu_ms"].as_f64().expect("cpu_ms"));
        }
    }
    let ours_peak_mb = status_kb("VmHWM:").unwrap_or(0) as f64 / 1024.0;
    let peak_note = if peak_reset {
        ""
    } else {
        " (VmHWM of the whole run)"
    };

    let as_i64 = |res: &[Vec<(usize, f32)>]| -> Vec<i64> {
        res.iter()
            .flat_map(|r| r.iter().map(|p| p.0 as i64))
            .collect()
    };
    let batch_ids: Vec<Vec<i64>> = faiss.iter().map(|f| f.ids("batch")).collect();
    let single_ids_path = faiss[0].ids_path("single");
    let labels: Vec<(String, Kind)> = faiss
        .iter()
        .map(|f| match f.setup["threads"].as_u64() {
            Some(t) if f.label == "default threads" => {
                (format!("faiss {t} threads (default)"), Kind::FaissThreads)
            }
            _ => (format!("faiss {}", f.label), Kind::FaissOneThread),
        })
        .collect();
    let mut peaks = Vec::new();
    for f in faiss {
        peaks.push(f.quit() as f64 / 1024.0);
    }

    let isa = top_k_isa();
    let mut r = row(
        n,
        "batch",
        format!("ours PackedRows ({isa}){peak_note}"),
        Kind::Ours,
        &ours_batch,
    );
    r.peak_mb = ours_peak_mb;
    rows.push(r);
    let mut r = row(
        n,
        "batch",
        "ours rows as given".into(),
        Kind::OursRows,
        &rows_batch,
    );
    r.agree = Some(agreement(&ours_batch_ids, &as_i64(&rows_batch_ids)));
    rows.push(r);
    for (i, t) in theirs_batch.iter().enumerate() {
        let mut r = row(n, "batch", labels[i].0.clone(), labels[i].1, t);
        r.agree = Some(agreement(&ours_batch_ids, &batch_ids[i]));
        r.peak_mb = peaks[i];
        rows.push(r);
    }
    let mut r = row(
        n,
        "single",
        format!("ours PackedRows ({isa}){peak_note}"),
        Kind::Ours,
        &ours_single,
    );
    r.peak_mb = ours_peak_mb;
    rows.push(r);
    let mut r = row(
        n,
        "single",
        "ours rows as given".into(),
        Kind::OursRows,
        &rows_single,
    );
    r.agree = Some(agreement(&ours_single_ids, &as_i64(&rows_single_ids)));
    rows.push(r);
    let mut r = row(
        n,
        "single",
        labels[0].0.clone(),
        labels[0].1,
        &theirs_single,
    );
    r.agree = Some(agreement(&ours_single_ids, &read_i64(&single_ids_path)));
    r.peak_mb = peaks[0];
    rows.push(r);
    SizeNote {
        faiss: format!(
            "faiss {} IndexFlatIP (BLAS threshold {} as installed; {}, detected core {detected}); faiss RSS before loading {:.0} MB",
            setup["faiss_version"].as_str().unwrap_or("?"),
            setup["blas_threshold"],
            setup["openblas"]["config"].as_str().unwrap_or("OpenBLAS ?"),
            setup["baseline_rss_kb"].as_f64().unwrap_or(0.0) / 1024.0
        ),
        pack_ms,
        packed_mb: packed.bytes() as f64 / (1024.0 * 1024.0),
    }
}

fn main() {
    if !bench_requested("search") {
        return;
    }
    let start = Instant::now();
    let load_start = load_average();
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    // TWIN_SEARCH_SIZES=100000,1000000 narrows the run to some of the sizes (a quicker look).
    let only: Option<Vec<usize>> = std::env::var("TWIN_SEARCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect());
    let sizes: Vec<(usize, usize, usize)> = SIZES
        .into_iter()
        .filter(|s| only.as_ref().is_none_or(|o| o.contains(&s.0)))
        .collect();
    for &(n, batch_rounds, single_rounds) in &sizes {
        eprintln!("search: {n} rows…");
        notes.push((n, bench_size(n, batch_rounds, single_rounds, &mut rows)));
    }

    println!();
    println!(
        "exact top-{K} by inner product, {QUERIES} queries, {DIM}-d unit vectors (Gaussian, seed {SEED:#x}), one thread unless named"
    );
    println!("ours: twin_search::PackedRows::top_k_ip (single) / top_k_ip_batch (batch); \"rows as given\": twin_search::top_k_ip / top_k_ip_batch on the plain row-major matrix");
    if let Some((_, note)) = notes.last() {
        println!(
            "{}; OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE removed for faiss unless named",
            note.faiss
        );
    }
    for (n, note) in &notes {
        println!(
            "N {n}: packing our copy took {:.0} ms ({:.0} MB)",
            note.pack_ms, note.packed_mb
        );
    }
    println!(
        "engines alternate (batch: round by round; single: query by query); load average at start {load_start}, at end {}",
        load_average()
    );
    println!(
        "{:>9} {:<6} {:<34} {:>9} {:>9} {:>8} {:>9} {:>16} {:>8}",
        "N",
        "mode",
        "engine",
        "p50 ms/q",
        "mean ms/q",
        "CPU/wall",
        "ours/this",
        "same top-10",
        "peak MB"
    );
    for r in &rows {
        let ours = rows
            .iter()
            .find(|o| o.n == r.n && o.mode == r.mode && o.kind == Kind::Ours)
            .expect("our row");
        let ratio = if r.kind == Kind::Ours {
            "-".to_string()
        } else {
            format!("{:.2}×", ours.mean / r.mean)
        };
        let agree = r.agree.map_or("-".to_string(), |a| {
            format!("{}/{} ({} ord)", a.same_set, a.queries, a.same_order)
        });
        let cpu = r
            .cpu_per_wall
            .map_or("-".to_string(), |c| format!("{c:.2}"));
        let peak = if r.peak_mb > 0.0 {
            format!("{:.0}", r.peak_mb)
        } else {
            "-".to_string()
        };
        println!(
            "{:>9} {:<6} {:<34} {:>9.4} {:>9.4} {:>8} {:>9} {:>16} {:>8}",
            r.n, r.mode, r.engine, r.p50, r.mean, cpu, ratio, agree, peak
        );
    }
    println!("(ms/q: batch = call time / {QUERIES}, p50 and mean over rounds; single = each call. same top-10: queries whose ids equal ours (packed) as a set (in the same order). peak MB: ours = VmHWM of this process, reset per size, holding the generated rows and the packed copy; faiss = ru_maxrss of its process, holding numpy's rows and the index copy. CPU/wall: process CPU time over wall time, faiss only)");

    println!();
    println!(
        "summary: ours (PackedRows) against the faster one-thread faiss (goal ours/faiss ≤ 1.2)"
    );
    println!(
        "{:>9} {:<6} {:>10} {:>10} {:<30} {:>10} {:>9} {:>9} {:>9}",
        "N",
        "mode",
        "ours ms/q",
        "faiss ms/q",
        "faiss",
        "ours/faiss",
        "ours MB",
        "faiss MB",
        "matrix MB"
    );
    for &(n, _, _) in &sizes {
        for mode in ["batch", "single"] {
            let ours = rows
                .iter()
                .find(|r| r.n == n && r.mode == mode && r.kind == Kind::Ours);
            let best = rows
                .iter()
                .filter(|r| r.n == n && r.mode == mode && r.kind == Kind::FaissOneThread)
                .min_by(|a, b| a.mean.total_cmp(&b.mean));
            if let (Some(o), Some(f)) = (ours, best) {
                println!(
                    "{:>9} {:<6} {:>10.4} {:>10.4} {:<30} {:>9.2}× {:>9.0} {:>9.0} {:>9.0}",
                    n,
                    mode,
                    o.mean,
                    f.mean,
                    f.engine.trim_start_matches("faiss "),
                    o.mean / f.mean,
                    o.peak_mb,
                    f.peak_mb,
                    (n * DIM * 4) as f64 / (1024.0 * 1024.0)
                );
            }
        }
    }
    println!("total time {:.0} s", start.elapsed().as_secs_f64());
}
