//! `twin eval pairs` on an LFW-style pairs file made from `../shared/data/faces`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

fn faces() -> PathBuf {
    let d = twin_tests::data_dir().join("faces");
    assert!(d.is_dir(), "test data {} is missing", d.display());
    d
}

/// 10 folds × 15 matched + 15 mismatched pairs, chosen by a fixed pseudo-random sequence.
fn pairs_file(ids: &[(String, u32)]) -> String {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u32| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as u32
    };
    let mut out = String::from("10 15\n");
    for _ in 0..10 {
        for _ in 0..15 {
            let (name, count) = &ids[next(ids.len() as u32) as usize];
            let a = 1 + next(*count);
            let b = 1 + (a + next(*count - 1)) % count;
            writeln!(out, "{name} {a} {b}").unwrap();
        }
        for _ in 0..15 {
            let i = next(ids.len() as u32) as usize;
            let j = (i + 1 + next(ids.len() as u32 - 1) as usize) % ids.len();
            writeln!(
                out,
                "{} {} {} {}",
                ids[i].0,
                1 + next(ids[i].1),
                ids[j].0,
                1 + next(ids[j].1)
            )
            .unwrap();
        }
    }
    out
}

#[test]
fn verification_accuracy_on_the_face_set() {
    let mut ids: Vec<(String, u32)> = std::fs::read_dir(faces())
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            e.path().is_dir().then(|| {
                let n = std::fs::read_dir(e.path()).unwrap().count() as u32;
                (e.file_name().to_string_lossy().into_owned(), n)
            })
        })
        .collect();
    ids.sort();
    assert!(ids.len() >= 20, "expected the face set's identities");
    let mut text = pairs_file(&ids);
    // One pair names an image that does not exist: it must count as wrong, not vanish.
    text = text.replacen(
        &text.lines().nth(20).unwrap().to_string(),
        &format!("{} 1 {} 999", ids[0].0, ids[1].0),
        1,
    );
    let dir = tempfile::tempdir().unwrap();
    let pairs = dir.path().join("pairs.txt");
    std::fs::write(&pairs, &text).unwrap();
    let saved = dir.path().join("embeddings.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_twin"))
        .args(["eval", "pairs", "--json", "--pairs"])
        .arg(&pairs)
        .arg("--images")
        .arg(faces())
        .arg("--save-embeddings")
        .arg(&saved)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    println!("{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pairs"], 300);
    assert_eq!(v["fold_accuracy"].as_array().unwrap().len(), 10);
    assert!(
        v["no_face"].as_u64().unwrap() >= 1,
        "the missing image counts as a pair without a face"
    );
    let acc = v["accuracy"].as_f64().unwrap();
    assert!(
        acc > 0.9 && acc < 1.0,
        "accuracy {acc} (the missing-image pair keeps it under 1)"
    );
    for t in v["fold_threshold"].as_array().unwrap() {
        let t = t.as_f64().unwrap();
        assert!(
            (0.3..0.9).contains(&t),
            "thresholds near dlib's 0.6, got {t}"
        );
    }

    // The saved embeddings: one line per image the pairs name, the missing one without an
    // embedding; scored at the run's own fold thresholds they give the accuracy it reported.
    let mut saved_rows = std::collections::HashMap::new();
    for line in std::fs::read_to_string(&saved).unwrap().lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = (
            r["name"].as_str().unwrap().to_string(),
            r["number"].as_u64().unwrap() as u32,
        );
        let emb: Option<Vec<f64>> = r["embedding"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_f64().unwrap()).collect());
        if let Some(e) = &emb {
            assert_eq!(e.len(), 128);
            assert!(r["found_by"].is_string(), "{r}");
        }
        assert!(saved_rows.insert(key, emb).is_none(), "one line per image");
    }
    let parsed = twin_model::eval::parse_pairs(&text).unwrap();
    let mut named: Vec<_> = parsed.iter().flat_map(|p| [&p.a, &p.b]).collect();
    named.sort();
    named.dedup();
    assert_eq!(saved_rows.len(), named.len());
    assert_eq!(saved_rows[&(ids[1].0.clone(), 999)], None);
    let thresholds = v["fold_threshold"].as_array().unwrap();
    let mut right = [0usize; 10];
    for p in &parsed {
        if let (Some(a), Some(b)) = (&saved_rows[&p.a], &saved_rows[&p.b]) {
            let d = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f64>()
                .sqrt();
            right[p.fold] += ((d < thresholds[p.fold].as_f64().unwrap()) == p.same) as usize;
        }
    }
    let recomputed = right.iter().map(|r| *r as f64 / 30.0).sum::<f64>() / 10.0;
    assert!(
        (recomputed - acc).abs() < 1e-9,
        "accuracy from the saved embeddings {recomputed}, reported {acc}"
    );
}

#[test]
fn malformed_pairs_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = dir.path().join("pairs.txt");
    std::fs::write(&pairs, "10 300\nAaron 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_twin"))
        .args(["eval", "pairs", "--pairs"])
        .arg(&pairs)
        .arg("--images")
        .arg(faces())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pairs file line 2"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
