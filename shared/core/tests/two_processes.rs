//! Two operating-system processes commit dataset versions into one data folder at the same
//! time, as `twin serve` and a `twin gallery import` may: no commit may be lost.
//!
//! The test binary runs itself twice as a writer (the environment variable [`WRITER_ENV`] names
//! the writer, [`DATA_ENV`] the data folder); each writer commits [`COMMITS`] uploads of its
//! own, one version each, through [`dataset::commit`]. The parent then checks that the current
//! version holds every upload of both writers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use twin_core::dataset::{self, DatasetError, Update};
use twin_core::messages::{IngestMessage, MESSAGE_VERSION};
use twin_core::store::LocalStore;

/// Set in a child: the writer's name (`a` or `b`).
const WRITER_ENV: &str = "TWIN_TEST_TWO_PROCESSES_WRITER";
/// Set in a child: the data folder.
const DATA_ENV: &str = "TWIN_TEST_TWO_PROCESSES_DATA";
/// Set in a child: the file whose appearance starts both writers at once.
const GO_ENV: &str = "TWIN_TEST_TWO_PROCESSES_GO";
/// This test's name, for the children's test filter.
const TEST_NAME: &str = "two_processes_lose_no_commit";
/// Versions each writer commits.
const COMMITS: usize = 30;
/// Embedding length.
const DIM: usize = 4;
/// The writers.
const WRITERS: [&str; 2] = ["a", "b"];
/// Commits a writer repeats after [`DatasetError::Contention`] before it fails.
const MAX_RETRIES: usize = 20;
/// What a writer's last line says before its number of retries.
const RETRIES_MARK: &str = "commits retried after contention:";
/// How long a child waits for the start signal, and the parent for a child.
const PATIENCE: Duration = Duration::from_secs(120);

/// The upload id of a writer's `i`-th commit.
fn upload_id(writer: &str, i: usize) -> String {
    format!("upload-{writer}-{i:03}")
}

/// Writer `writer`'s `i`-th upload: one crop, its embedding filled with `i`.
fn update(writer: &str, i: usize) -> Update {
    let slug = format!("person_{writer}");
    let upload_id = upload_id(writer, i);
    let message = IngestMessage {
        v: MESSAGE_VERSION,
        crops: vec![format!("crops/{slug}/{upload_id}/1.png")],
        display_name: format!("Person {}", writer.to_uppercase()),
        source_key: format!("uploads/{slug}/{upload_id}.jpg"),
        rejected: Default::default(),
        upload_id,
        slug,
    };
    message.check().expect("the test builds valid messages");
    Update::Add {
        message,
        embeddings: vec![vec![i as f32; DIM]],
    }
}

/// The child's part: wait for the start signal, then commit this writer's uploads one by one.
fn run_writer(writer: &str) {
    let data = PathBuf::from(std::env::var_os(DATA_ENV).expect("the parent sets the data folder"));
    let go = PathBuf::from(std::env::var_os(GO_ENV).expect("the parent sets the start file"));
    let start = Instant::now();
    while !go.exists() {
        assert!(start.elapsed() < PATIENCE, "no start signal");
        std::thread::sleep(Duration::from_millis(1));
    }
    let store = LocalStore::open(&data).expect("the data folder opens");
    // Two writers committing in tight loops can make one of them lose the race for `CURRENT`
    // every time until `commit` gives up ([`DatasetError::Contention`]): an error its caller
    // sees (and a queue would redeliver), not a lost commit. The writer waits a little and
    // commits the same upload again, as a redelivery would.
    let mut retries = 0;
    for i in 0..COMMITS {
        loop {
            match dataset::commit(&store, DIM, &[update(writer, i)]) {
                Ok(version) => {
                    println!("writer {writer} committed upload {i} as version {version}");
                    break;
                }
                Err(DatasetError::Contention) if retries < MAX_RETRIES => {
                    retries += 1;
                    std::thread::sleep(Duration::from_millis(1 + retries as u64 % 5));
                }
                Err(e) => panic!("writer {writer}, commit {i}: {e}"),
            }
        }
    }
    println!("writer {writer}: {RETRIES_MARK} {retries}");
}

/// Starts writer `writer` on `data`.
fn spawn_writer(writer: &str, data: &Path, go: &Path) -> std::process::Child {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    Command::new(exe)
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(WRITER_ENV, writer)
        .env(DATA_ENV, data)
        .env(GO_ENV, go)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test binary starts again")
}

#[test]
fn two_processes_lose_no_commit() {
    if let Ok(writer) = std::env::var(WRITER_ENV) {
        run_writer(&writer);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let go = dir.path().join("go");
    LocalStore::open(&data).unwrap();
    let children: Vec<_> = WRITERS
        .iter()
        .map(|w| (w, spawn_writer(w, &data, &go)))
        .collect();
    // Both children are waiting (or about to): start them together.
    std::fs::write(&go, b"").unwrap();
    for (w, child) in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "writer {w} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        for line in stdout.lines().filter(|l| l.contains(RETRIES_MARK)) {
            println!("{line}");
        }
    }

    let store = LocalStore::open(&data).unwrap();
    let manifest = dataset::load_current_manifest(&store)
        .unwrap()
        .expect("a version is current");
    let expected: Vec<String> = WRITERS
        .iter()
        .flat_map(|w| (0..COMMITS).map(move |i| upload_id(w, i)))
        .collect();
    let lost: Vec<&String> = expected
        .iter()
        .filter(|u| !manifest.applied_uploads.contains(*u))
        .collect();
    println!(
        "current version {}: {} of {} commits lost",
        manifest.version,
        lost.len(),
        expected.len()
    );
    assert!(
        lost.is_empty(),
        "{} of {} commits were lost: {lost:?}",
        lost.len(),
        expected.len()
    );
    assert_eq!(manifest.rows, expected.len(), "one row per upload");
    let snapshot = dataset::load_current(&store).unwrap().unwrap();
    assert_eq!(snapshot.embeddings.len(), expected.len() * DIM);
}
