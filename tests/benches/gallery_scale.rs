//! A gallery of a million faces on the local store: what one commit writes, what compaction
//! costs, how long a fresh process takes to open the folder and answer its first match, and the
//! peak memory of `twin serve` on it.
//!
//! `cargo bench -p twin-tests --bench gallery_scale` builds a synthetic gallery of [`PEOPLE`]
//! identities × [`PER_PERSON`] embeddings (random unit vectors of the backbone's 128 values,
//! committed in batches through the dataset writer the product uses), compacts it, then times:
//! committing one new identity (through `DatasetWriter::commit`, the dataset step's path; the
//! bytes it writes are counted by a store that wraps the local one), a second compaction after
//! an erasure, `Local::open_inline` on the folder followed by the first `match_photo` of a real
//! photo, and a `twin serve` process (its `VmHWM` after one `POST /v1/match`). Numbers only.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use twin_app::gallery::DatasetWriter;
use twin_app::local::{Local, LocalConfig};
use twin_core::dataset::{self, Update};
use twin_core::store::{Condition, LocalStore, ObjectStore, StoreError, Tagged};
use twin_tests::synthetic::{self, Rng, BATCH, DIM};
use twin_tests::{bench_requested, data_dir, models_dir};

/// Identities in the synthetic gallery.
const PEOPLE: usize = 100_000;
/// Embeddings per identity.
const PER_PERSON: usize = 10;

/// The local store, counting the bytes written through it.
struct Counting {
    inner: LocalStore,
    written: AtomicU64,
    puts: AtomicU64,
}

impl ObjectStore for Counting {
    fn get(&self, key: &str) -> Result<Option<Tagged>, StoreError> {
        self.inner.get(key)
    }
    fn put(&self, key: &str, data: &[u8], cond: Condition) -> Result<String, StoreError> {
        self.written.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.put(key, data, cond)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.inner.list(prefix)
    }
    // The rest as the local store does them (the defaults would read whole files).
    fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_range(key, start, len)
    }
    fn file_of(&self, key: &str) -> Option<std::path::PathBuf> {
        self.inner.file_of(key)
    }
    fn list_with_age(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Option<std::time::Duration>)>, StoreError> {
        self.inner.list_with_age(prefix)
    }
}

fn folder_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    if !bench_requested("gallery_scale") {
        return;
    }
    let work = tempfile::tempdir().expect("a temporary folder");
    let data = work.path().join("data");
    let store = Arc::new(Counting {
        inner: LocalStore::open(&data).expect("the data folder"),
        written: AtomicU64::new(0),
        puts: AtomicU64::new(0),
    });
    let writer = DatasetWriter::new(store.clone());
    let mut rng = Rng(42);

    let t = Instant::now();
    for batch in synthetic::batches(PEOPLE, PER_PERSON, &mut rng) {
        writer.commit(DIM, &batch).expect("a build commit");
    }
    let build_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let c = writer.compact().expect("compaction");
    let compact_s = t.elapsed().as_secs_f64();
    let manifest = dataset::load_current_manifest(&*store).unwrap().unwrap();
    println!(
        "gallery: {} identities, {} embeddings of {DIM} values ({:.0} MB in the data folder), built in {build_s:.1} s",
        manifest.identities.len(),
        manifest.rows,
        mb(folder_bytes(&data))
    );
    println!(
        "compaction of the {} build commits: {compact_s:.2} s ({} objects deleted)",
        PEOPLE.div_ceil(BATCH),
        c.deleted
    );

    // One new person, through the dataset step's writer.
    let before = (
        store.written.load(Ordering::Relaxed),
        store.puts.load(Ordering::Relaxed),
    );
    let t = Instant::now();
    let v = writer
        .commit(DIM, &[synthetic::person(PEOPLE, PER_PERSON, &mut rng)])
        .expect("one commit");
    let commit_ms = t.elapsed().as_secs_f64() * 1e3;
    let written = store.written.load(Ordering::Relaxed) - before.0;
    let puts = store.puts.load(Ordering::Relaxed) - before.1;
    println!(
        "commit of 1 new identity ({PER_PERSON} embeddings) on {} rows: {written} bytes in {puts} objects, {commit_ms:.1} ms (version {v})",
        manifest.rows
    );

    // An erasure, then the compaction that drops the person's rows for good.
    let t = Instant::now();
    let (_, c) = writer
        .commit_reporting(
            DIM,
            &[Update::Erase {
                slug: synthetic::slug(7),
            }],
        )
        .expect("erase");
    let c = c.expect("an erasure is compacted at once");
    println!(
        "erasure of one identity, committed and compacted: {:.2} s ({} rows kept, {} objects deleted)",
        t.elapsed().as_secs_f64(),
        c.rows,
        c.deleted
    );
    drop(writer);

    // A fresh process's view: open the folder, answer the first match.
    let photo = std::fs::read(data_dir().join("media/obama.jpg")).expect("the photo");
    let t = Instant::now();
    let local = Local::open_inline(&LocalConfig::new(data.clone(), models_dir(), 2)).expect("open");
    let open_s = t.elapsed().as_secs_f64();
    let r = local.matching.match_photo(&photo, 5).expect("match");
    let first_s = t.elapsed().as_secs_f64();
    println!(
        "Local::open_inline on {} rows: {open_s:.2} s; first match answered at {first_s:.2} s ({} faces, dataset version {})",
        local.gallery.current().expect("the gallery").rows(),
        r.faces.len(),
        r.dataset_version
    );
    drop(local);

    // `twin serve` on the folder: its peak resident memory after one match.
    let twin = build_twin();
    let rss = serve_peak_rss(&twin, &data, &photo).expect("twin serve answers a match");
    println!("twin serve peak RSS (VmHWM) after opening and one POST /v1/match: {rss:.0} MB");
}

/// Builds `twin` with this bench's profile and returns its path.
fn build_twin() -> std::path::PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--profile",
            "bench",
            "-p",
            "twin-cli",
            "--bin",
            "twin",
        ])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(twin_tests::repo_root())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("cannot run cargo");
    assert!(out.status.success(), "building twin failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "twin")
        .find_map(|m| m["executable"].as_str().map(std::path::PathBuf::from))
        .expect("cargo reported no twin executable")
}

/// Starts `twin serve` on `data`, sends one match, reads its VmHWM, stops it.
fn serve_peak_rss(twin: &Path, data: &Path, photo: &[u8]) -> Option<f64> {
    let mut child = Command::new(twin)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--allow-writes-without-key",
            "--data",
        ])
        .arg(data)
        .env("TWIN_MODELS_DIR", models_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("twin serve starts");
    let rss = match_and_measure(&mut child, photo);
    let _ = child.kill();
    let _ = child.wait();
    rss
}

fn match_and_measure(child: &mut std::process::Child, photo: &[u8]) -> Option<f64> {
    let mut line = String::new();
    BufReader::new(child.stdout.take()?)
        .read_line(&mut line)
        .ok()?;
    let addr = line
        .trim()
        .strip_prefix("Twin Matcher is at http://")?
        .trim_end_matches('/')
        .to_string();
    let mut s = std::net::TcpStream::connect(&addr).ok()?;
    write!(
        s,
        "POST /v1/match HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        photo.len()
    )
    .ok()?;
    s.write_all(photo).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "twin serve answered {}",
        answer.lines().next().unwrap_or("")
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
}
