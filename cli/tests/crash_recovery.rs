//! Killing `twin` in the middle of a dataset update leaves the last complete version, and the
//! next run completes the work.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn data(rel: &str) -> PathBuf {
    let d = twin_tests::data_dir().join(rel);
    assert!(d.exists(), "test data {} is missing", d.display());
    d
}

fn current_version(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join("dataset/CURRENT"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The current version's identities, read whole (its version file, every segment and their
/// rows, checked to agree: a version left half-written would fail here).
fn identities(dir: &Path) -> Vec<String> {
    let v = current_version(dir).expect("a current version");
    let store = twin_core::store::LocalStore::open(dir).unwrap();
    let snap = twin_core::dataset::load_version(&store, v)
        .unwrap_or_else(|e| panic!("version {v} is not complete: {e}"));
    assert_eq!(
        snap.embeddings.len(),
        snap.manifest.rows * 128,
        "version {v} is complete"
    );
    snap.manifest
        .identities
        .into_iter()
        .map(|i| i.slug)
        .collect()
}

#[test]
fn killed_import_keeps_the_last_version_and_the_next_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_twin"))
        .arg("--data")
        .arg(dir.path())
        .args(["gallery", "import"])
        .arg(data("faces"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once a few identities are committed, in the middle of the rest.
    let start = Instant::now();
    while current_version(dir.path()).unwrap_or(0) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "import made no progress"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "import finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = identities(dir.path());
    assert!(
        partial.len() >= 3 && partial.len() < 29,
        "{} identities after the kill",
        partial.len()
    );

    let out = Command::new(env!("CARGO_BIN_EXE_twin"))
        .arg("--data")
        .arg(dir.path())
        .args(["gallery", "import"])
        .arg(data("faces"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["identities"], 29);
    assert!(
        summary["already_imported"].as_u64().unwrap() >= partial.len() as u64,
        "{summary}"
    );
    let all = identities(dir.path());
    assert_eq!(all.len(), 29);
    for p in &partial {
        assert!(all.contains(p));
    }
    // Every face set photo imported exactly once.
    let store = twin_core::store::LocalStore::open(dir.path()).unwrap();
    let m = twin_core::dataset::load_current_manifest(&store)
        .unwrap()
        .unwrap();
    assert_eq!(
        m.rows
            + summary["rejected"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap() as usize)
                .sum::<usize>(),
        805,
        "{} rows",
        m.rows
    );
}

#[test]
fn killed_enrollment_is_finished_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    // A small gallery first.
    let gallery = tempfile::tempdir().unwrap();
    for who in ["Barack_Obama", "Tom_Hanks"] {
        let dst = gallery.path().join(who);
        std::fs::create_dir(&dst).unwrap();
        for i in 1..=3 {
            std::fs::copy(
                data("faces").join(who).join(format!("{i}.jpg")),
                dst.join(format!("{i}.jpg")),
            )
            .unwrap();
        }
    }
    let st = Command::new(env!("CARGO_BIN_EXE_twin"))
        .arg("--data")
        .arg(dir.path())
        .args(["gallery", "import"])
        .arg(gallery.path())
        .output()
        .unwrap();
    assert!(st.status.success());
    let before = current_version(dir.path()).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_twin"))
        .arg("--data")
        .arg(dir.path())
        .args(["enroll", "--name", "Lin-Manuel Miranda"])
        .arg(data("media/short_hamilton_clip.mp4"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it while it cuts faces (the upload is stored, the dataset not yet updated).
    let start = Instant::now();
    loop {
        let uploaded = std::fs::read_dir(dir.path().join("status"))
            .ok()
            .is_some_and(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .any(|e| {
                        std::fs::read_to_string(e.path())
                            .unwrap_or_default()
                            .contains("\"uploaded\"")
                    })
            });
        if uploaded {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "enrollment never reached uploaded"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "enrollment finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(current_version(dir.path()), Some(before), "no half version");
    assert!(!identities(dir.path()).contains(&"lin_manuel_miranda".to_string()));

    // The next run (any command that resumes) finishes the enrollment.
    let out = Command::new(env!("CARGO_BIN_EXE_twin"))
        .arg("--data")
        .arg(dir.path())
        .args(["gallery", "import"])
        .arg(gallery.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(identities(dir.path()).contains(&"lin_manuel_miranda".to_string()));
    let statuses: Vec<String> = std::fs::read_dir(dir.path().join("status"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert_eq!(statuses.len(), 1);
    assert!(statuses[0].contains("\"indexed\""), "{}", statuses[0]);
}
