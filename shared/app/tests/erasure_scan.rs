//! Erasure leaves nothing: on a data folder with three people imported, a model trained (and
//! serving) that knows them, and a second enrollment of one of them in flight (cropped, its
//! message not yet taken by the dataset step), that person is erased; the in-flight message then
//! arrives. Every file of the data folder is then scanned for the person's slug, display name and
//! embeddings (the bytes of their rows as stored): none is found. The erasure is also idempotent.

use std::path::{Path, PathBuf};

use twin_app::enrollment::UploadReceiver as _;
use twin_app::local::{Local, LocalConfig};
use twin_core::dataset;
use twin_core::enrollment::EnrollmentState;
use twin_model::models;
use twin_model::train::TrainOptions;

const PEOPLE: [&str; 3] = ["Barack_Obama", "Madonna", "Tina_Fey"];
const GONE: (&str, &str) = ("barack_obama", "Barack Obama");

fn import_folder(scratch: &Path) -> PathBuf {
    let faces = scratch.join("faces");
    for who in PEOPLE {
        let src = twin_tests::data_dir().join("faces").join(who);
        let dst = faces.join(who);
        std::fs::create_dir_all(&dst).unwrap();
        for n in 1..=6 {
            std::fs::copy(src.join(format!("{n}.jpg")), dst.join(format!("{n}.jpg"))).unwrap();
        }
    }
    faces
}

/// Every file under `dir` that keeps something of the person (see [`twin_tests::leak`]).
fn scan(dir: &Path, words: &[&str], rows: &[Vec<f32>]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            files += 1;
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            found.extend(twin_tests::leak(
                &rel,
                &std::fs::read(&p).unwrap(),
                words,
                rows,
            ));
        }
    }
    assert!(files > 10, "the scan read {files} files only");
    found
}

#[test]
fn an_erased_person_leaves_nothing_in_the_data_folder() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let local = Local::open_inline(&LocalConfig::new(data.clone(), twin_tests::models_dir(), 1))
        .expect("open the data folder");
    let faces = import_folder(work.path());
    let summary = local.import.folder(&faces, &|_, _| {}).unwrap();
    assert_eq!(summary.identities, PEOPLE.len());

    // A trained model that knows them, serving.
    let backbone = std::fs::read(twin_tests::require_backbone()).unwrap();
    let options = TrainOptions {
        threads: 1,
        min_crops: 3,
        ..Default::default()
    };
    let m = models::train_and_gate(local.store(), &backbone, &options, &|_, _| {})
        .unwrap()
        .metrics;
    if !m.promoted {
        models::promote(local.store(), m.version).unwrap();
    }
    assert_eq!(local.models.check(), Some(m.version));
    assert!(models::read_labels(local.store(), m.version)
        .unwrap()
        .labels
        .iter()
        .any(|l| l.slug == GONE.0));

    // What must go: the person's embedding rows as stored.
    let before = dataset::load_current(local.store()).unwrap().unwrap();
    let dim = before.manifest.dim;
    let mut rows = Vec::new();
    let mut r = 0;
    for i in &before.manifest.identities {
        for _ in &i.crops {
            if i.slug == GONE.0 {
                rows.push(before.embeddings[r * dim..(r + 1) * dim].to_vec());
            }
            r += 1;
        }
    }
    assert!(rows.len() >= 5, "{} rows", rows.len());

    // A second enrollment of the same person, in flight: ingested (cropped, message queued),
    // not yet taken by the dataset step.
    let e = local
        .enrollments
        .create("Barack Obama", Some(GONE.0))
        .unwrap();
    let photo = std::fs::read(twin_tests::data_dir().join("media/obama.jpg")).unwrap();
    local
        .enrollments
        .store_upload(&e.upload_id, "image/jpeg", &photo)
        .unwrap();
    local.ingest.run(&e.upload_id).unwrap();
    assert_eq!(
        local.enrollments.status(&e.upload_id).unwrap().state,
        EnrollmentState::Cropped
    );

    let done = local.erasure.erase(GONE.0).expect("erase");
    println!("erased: {done:?}");
    assert_eq!(done.enrollments, 1);
    assert!(done.models >= 1 && done.dataset_objects > 0, "{done:?}");
    // The in-flight message arrives now: refused, and what it left is deleted.
    local.resume_inline().unwrap();
    // A late upload to the erased enrollment is refused too.
    assert!(local.receive(&e.upload_id, "image/jpeg", &photo).is_err());

    let found = scan(&data, &[GONE.0, GONE.1], &rows);
    assert!(
        found.is_empty(),
        "after the erasure the data folder still holds: {found:?}"
    );

    // Matching and the models' report no longer name them; the others are untouched.
    let hits = local.matching.match_photo(&photo, 5).unwrap();
    assert!(hits.faces[0].matches.iter().all(|h| h.slug != GONE.0));
    let report = serde_json::to_string(&local.models.models().unwrap()).unwrap();
    assert!(!report.contains(GONE.0), "{report}");
    let left = dataset::load_current_manifest(local.store())
        .unwrap()
        .unwrap();
    assert_eq!(left.identities.len(), PEOPLE.len() - 1);
    // Again: nothing is left to erase.
    assert!(matches!(
        local.erasure.erase(GONE.0),
        Err(twin_app::Error::NotFound(_))
    ));
}
