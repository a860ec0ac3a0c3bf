//! Search speed of the product's path, [`Gallery::search_with_head`], against faiss's
//! `IndexFlatIP` on the same vectors, at 10 k, 100 k and 1 M rows, in one run.
//!
//! `cargo bench -p twin-tests --bench search` builds, for each size, a gallery of `N / 10`
//! identities × [`PER_PERSON`] embeddings of [`DIM`] values the way the product does: committed in
//! batches through the dataset writer (`twin_core::dataset::commit`) to a local store in a
//! temporary folder, compacted, then read for search (`load_current_for_search`: the segment
//! file mapped into memory and its binary16 rows converted, as `twin serve` and the local host
//! search it) into a [`Gallery`]. The
//! embeddings are random directions scaled to [`LENGTH`] (about a dlib descriptor's length), so
//! every row has the same length and inner product ranks rows as Euclidean distance does. The
//! same rows as stored (rounded to binary16), as raw little-endian `f32`, go to
//! `reference/faiss_bench.py` (the venv's Python,
//! faiss-cpu, `faiss.omp_set_num_threads(1)`). Then it times the top-10 of [`QUERIES`] queries,
//! one query per call (as `POST /v1/match` searches), query by query in turn so that all see the
//! same machine load:
//! - ours, no head: `search_with_head(q, 10, excluded, None)`: every row's distance, each
//!   identity's nearest crop, the 10 nearest identities, their hits (names, crop keys from the
//!   segment's keys table, prototypes);
//! - ours, with a head: the same call with a trained head's scores, looked up by slug as
//!   `twin_app::matching` does (a score per identity for [`KNOWN`] of them; the others are ranked
//!   by their prototype, as identities enrolled after training are);
//! - ours, rows in memory: no head, on a gallery of the same rows read into memory
//!   ([`Gallery::from_rows`], as the api Lambda holds rows read from S3);
//! - faiss: `index.search` of one query, timed in Python around the call (so it includes the
//!   binding's few microseconds).
//!
//! The summary gives ours/faiss per size (the goal at 1 M: ≤ 1.2). The run checks that faiss's
//! nearest rows belong to the identities ours returns first: rows rounded to binary16 are no
//! longer all exactly [`LENGTH`] long, so inner product and distance can order a near tie
//! differently (95–97 of 100 queries agree; 100 did with `f32` rows). Numbers only: nothing here asserts
//! a speed.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;
use twin_core::rows::RowEncoding;

use serde_json::Value;
use twin_core::dataset::{self, Update};
use twin_core::gallery::{Gallery, HeadScores, Hit};
use twin_core::store::{LocalStore, ObjectStore};
use twin_tests::synthetic::{self, slug, Rng, DIM, LENGTH};
use twin_tests::{bench_requested, median, SETUP_HINT};

/// Embeddings per identity.
const PER_PERSON: usize = 10;
/// Results per query.
const K: usize = 10;
/// Queries per round.
const QUERIES: usize = 100;
/// Out of ten identities, how many the head knows.
const KNOWN: usize = 9;
/// Seed of the vectors (each size adds its row count).
const SEED: u64 = 0x7717_5EED;
/// Gallery rows, with the rounds of queries at that size.
const SIZES: [(usize, usize); 3] = [(10_000, 10), (100_000, 5), (1_000_000, 2)];

/// A gallery of `rows` rows built and read as the product does, and the same rows in identity
/// order (row `r` is identity `r / PER_PERSON`'s).
fn build(dir: &Path, rows: usize, seed: u64) -> (Gallery, Vec<f32>) {
    let store: Arc<dyn ObjectStore> =
        Arc::new(LocalStore::open(dir).expect("a local store in the temporary folder"));
    let mut rng = Rng(seed);
    let mut matrix = Vec::with_capacity(rows * DIM);
    for batch in synthetic::batches(rows / PER_PERSON, PER_PERSON, &mut rng) {
        for u in &batch {
            if let Update::Add { embeddings, .. } = u {
                embeddings.iter().for_each(|e| matrix.extend_from_slice(e));
            }
        }
        dataset::commit(&*store, DIM, &batch).expect("a commit");
    }
    dataset::compact(&*store).expect("compaction");
    let version = dataset::load_current_for_search(&store)
        .expect("read for search")
        .expect("a current version");
    // The rows as the dataset stores them, for the in-memory gallery and faiss.
    let matrix = RowEncoding::F16
        .decode(&RowEncoding::F16.encode(&matrix))
        .expect("whole values");
    (Gallery::from_search(version), matrix)
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

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// One faiss process serving commands (see `reference/faiss_bench.py`), on one thread.
struct Faiss {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    setup: Value,
    ids_prefix: PathBuf,
}

impl Faiss {
    fn spawn(dir: &Path) -> Faiss {
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
        let ids_prefix = dir.join("ids");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg("--db")
            .arg(dir.join("db.f32"))
            .arg("--queries")
            .arg(dir.join("queries.f32"))
            .arg("--dim")
            .arg(DIM.to_string())
            .arg("--k")
            .arg(K.to_string())
            .arg("--threads")
            .arg("1")
            .arg("--ids-prefix")
            .arg(&ids_prefix)
            .env_remove("OMP_NUM_THREADS")
            .env_remove("OPENBLAS_NUM_THREADS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SETUP_HINT}", python.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut f = Faiss {
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
            panic!("faiss_bench.py stopped ({status}); if faiss is missing: {SETUP_HINT}");
        }
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("cannot parse faiss_bench.py output ({e}): {line}"))
    }

    fn ask(&mut self, cmd: &str) -> Value {
        writeln!(self.stdin, "{cmd}").expect("write to faiss_bench.py");
        self.stdin.flush().expect("write to faiss_bench.py");
        self.read()
    }

    /// One query: milliseconds of `index.search`.
    fn one(&mut self, i: usize) -> f64 {
        self.ask(&format!("one {i}"))["wall_ms"]
            .as_f64()
            .expect("wall_ms")
    }

    /// Stops the process; the row ids of its last answer to each query.
    fn quit(mut self) -> Vec<i64> {
        self.ask("quit");
        self.child.wait().expect("wait for faiss_bench.py");
        read_i64(&PathBuf::from(format!(
            "{}.single.i64",
            self.ids_prefix.display()
        )))
    }
}

/// Times `f` once: its result and milliseconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64() * 1e3)
}

/// The identity numbers of hits.
fn identities(hits: &[Hit]) -> Vec<usize> {
    hits.iter()
        .map(|h| h.slug[1..].parse().expect("a numbered slug"))
        .collect()
}

/// Queries for which the identities of faiss's nearest rows, in order of first appearance, are
/// the first identities ours returns, in the same order.
fn agreeing(ours: &[Vec<usize>], faiss_rows: &[i64]) -> usize {
    ours.iter()
        .enumerate()
        .filter(|(q, mine)| {
            let mut theirs: Vec<usize> = Vec::new();
            for &r in &faiss_rows[q * K..(q + 1) * K] {
                let i = r as usize / PER_PERSON;
                if !theirs.contains(&i) {
                    theirs.push(i);
                }
            }
            mine.len() >= theirs.len() && mine[..theirs.len()] == theirs[..]
        })
        .count()
}

/// Milliseconds per query of each engine at one size.
struct Measured {
    n: usize,
    build_s: f64,
    isa: &'static str,
    /// no head, with a head, rows in memory, faiss.
    ms: [Vec<f64>; 4],
    agree: usize,
}

fn bench_size(n: usize, rounds: usize) -> Measured {
    let dir = tempfile::tempdir().expect("temporary folder");
    let t = Instant::now();
    let (gallery, matrix) = build(&dir.path().join("data"), n, SEED + n as u64);
    let build_s = t.elapsed().as_secs_f64();
    assert_eq!(gallery.rows(), n);
    let mut rng = Rng(SEED + 1);
    let queries: Vec<f32> = (0..QUERIES).flat_map(|_| rng.embedding()).collect();
    write_f32(&dir.path().join("db.f32"), &matrix);
    write_f32(&dir.path().join("queries.f32"), &queries);
    let mut faiss = Faiss::spawn(dir.path());
    if n == SIZES[0].0 {
        eprintln!(
            "search: faiss {} IndexFlatIP, {} thread(s)",
            faiss.setup["faiss_version"].as_str().unwrap_or("?"),
            faiss.setup["threads"]
        );
    }
    let people = n / PER_PERSON;
    let names: Vec<(String, String)> = (0..people)
        .map(|i| (slug(i), format!("Person {i}")))
        .collect();
    let owners: Vec<u32> = (0..n).map(|r| (r / PER_PERSON) as u32).collect();
    let in_memory = Gallery::from_rows(DIM, matrix, owners, names);

    // A trained head as the product holds one: a score column per identity it knows.
    let columns: HashMap<String, usize> = (0..people)
        .filter(|i| i % 10 < KNOWN)
        .enumerate()
        .map(|(c, i)| (slug(i), c))
        .collect();
    let scores: Vec<Vec<f32>> = (0..QUERIES)
        .map(|_| {
            (0..columns.len())
                .map(|_| rng.unit() as f32 * 2.0 - 1.0)
                .collect()
        })
        .collect();
    let hidden: HashSet<String> = HashSet::new();
    let excluded = |s: &str| hidden.contains(s);
    let query = |i: usize| &queries[i * DIM..(i + 1) * DIM];
    let search = |g: &Gallery, i: usize, head: bool| {
        let row = &scores[i];
        let h = |s: &str| columns.get(s).map(|&c| row[c]);
        let head: Option<HeadScores<'_>> = head.then_some(&h);
        g.search_with_head(query(i), K, &excluded, head)
    };

    // Warm-up: the first searches list each identity's rows and the prototypes.
    for i in 0..3 {
        std::hint::black_box(search(&gallery, i, false));
        std::hint::black_box(search(&gallery, i, true));
        std::hint::black_box(search(&in_memory, i, false));
        faiss.one(i);
    }
    let mut ms: [Vec<f64>; 4] = Default::default();
    let mut ours = vec![Vec::new(); QUERIES];
    for _ in 0..rounds {
        for (i, found) in ours.iter_mut().enumerate() {
            let (hits, t) = timed(|| search(&gallery, i, false));
            ms[0].push(t);
            *found = identities(&hits);
            let (hits, t) = timed(|| search(&gallery, i, true));
            ms[1].push(t);
            assert_eq!(hits.len(), K);
            let (hits, t) = timed(|| search(&in_memory, i, false));
            ms[2].push(t);
            assert_eq!(
                identities(&hits),
                *found,
                "the store's rows and the in-memory rows disagree"
            );
            ms[3].push(faiss.one(i));
        }
    }
    let agree = agreeing(&ours, &faiss.quit());
    Measured {
        n,
        build_s,
        isa: twin_search::l2_isa(DIM),
        ms,
        agree,
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn main() {
    if !bench_requested("search") {
        return;
    }
    let start = Instant::now();
    let load_start = load_average();
    // TWIN_SEARCH_SIZES=100000,1000000 narrows the run to some of the sizes (a quicker look).
    let only: Option<Vec<usize>> = std::env::var("TWIN_SEARCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect());
    let mut measured = Vec::new();
    for (n, rounds) in SIZES {
        if only.as_ref().is_some_and(|o| !o.contains(&n)) {
            continue;
        }
        eprintln!("search: {n} rows…");
        measured.push(bench_size(n, rounds));
    }

    println!();
    println!(
        "top-{K} identities for one query per call, {QUERIES} queries × rounds, {DIM}-d embeddings of length {LENGTH} ({PER_PERSON} per identity, seed {SEED:#x}), one thread"
    );
    println!(
        "ours: twin_core::gallery::Gallery::search_with_head on the segment read from a local store (mapped, binary16 rows converted; kernel: {}); faiss: IndexFlatIP::search of the same rows (time taken in Python around the call)",
        measured.first().map_or("?", |m| m.isa)
    );
    println!(
        "engines alternate query by query; load average at start {load_start}, at end {}",
        load_average()
    );
    println!(
        "{:>9} {:>10} {:<38} {:>9} {:>9} {:>9} {:>10}",
        "N", "identities", "engine", "p50 ms", "mean ms", "p90 ms", "ours/faiss"
    );
    let engines = [
        "ours, no head (store rows)",
        "ours, with a head (store rows)",
        "ours, no head (rows in memory)",
        "faiss IndexFlatIP, 1 thread",
    ];
    for m in &measured {
        let faiss = mean(&m.ms[3]);
        for (name, ms) in engines.iter().zip(&m.ms) {
            let mut sorted = ms.clone();
            sorted.sort_by(f64::total_cmp);
            let p90 = sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)];
            let ratio = if name.starts_with("faiss") {
                "-".to_string()
            } else {
                format!("{:.2}×", mean(ms) / faiss)
            };
            println!(
                "{:>9} {:>10} {:<38} {:>9.3} {:>9.3} {:>9.3} {:>10}",
                m.n,
                m.n / PER_PERSON,
                name,
                median(ms.clone()),
                mean(ms),
                p90,
                ratio
            );
        }
    }
    println!("(ms per call over every query of every round; ours/faiss: mean over mean)");
    println!();
    println!("summary: the product's search (no head, store rows) against faiss, one thread (goal at 1 M: ours/faiss ≤ 1.2)");
    println!(
        "{:>9} {:>10} {:>10} {:>10} {:>11} {:>16} {:>9}",
        "N", "ours ms", "head ms", "faiss ms", "ours/faiss", "same nearest ids", "build s"
    );
    for m in &measured {
        println!(
            "{:>9} {:>10.3} {:>10.3} {:>10.3} {:>10.2}× {:>12}/{QUERIES} {:>9.1}",
            m.n,
            mean(&m.ms[0]),
            mean(&m.ms[1]),
            mean(&m.ms[3]),
            mean(&m.ms[0]) / mean(&m.ms[3]),
            m.agree,
            m.build_s
        );
    }
    println!("(same nearest ids: queries whose faiss top-{K} rows belong, in order, to the identities ours ranks first; build s: commits, compaction and reading the gallery for search)");
    println!("total time {:.0} s", start.elapsed().as_secs_f64());
}
