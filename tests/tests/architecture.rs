//! `docs/ARCHITECTURE.md` tells the truth about the workspace: its crate lines (each crate, its
//! folder, and every workspace crate it depends on, tests' dependencies marked `(dev)`) equal
//! what `cargo metadata` reports, edge for edge.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;
use twin_tests::repo_root;

/// A crate's folder and its workspace dependencies (normal, dev).
type Graph = BTreeMap<String, (String, BTreeSet<String>, BTreeSet<String>)>;

fn documented() -> Graph {
    let path = repo_root().join("docs/ARCHITECTURE.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Graph::new();
    for line in text
        .lines()
        .filter(|l| l.contains("──▶") && l.starts_with("twin-"))
    {
        let (left, right) = line.split_once("──▶").unwrap();
        let mut left = left.split_whitespace();
        let name = left.next().unwrap().to_string();
        let folder = left
            .next()
            .unwrap_or_else(|| panic!("no folder on {line:?}"))
            .to_string();
        let (normal, dev) = match right.split_once("; (dev)") {
            Some((n, d)) => (n, d),
            None => (right, ""),
        };
        let list = |s: &str| -> BTreeSet<String> {
            s.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty() && x != "(none)")
                .collect()
        };
        let dev = dev.trim_start_matches(" (dev)");
        assert!(
            out.insert(name.clone(), (folder, list(normal), list(dev)))
                .is_none(),
            "{name} is described twice"
        );
    }
    assert!(!out.is_empty(), "no crate lines in {}", path.display());
    out
}

fn actual() -> Graph {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(repo_root())
        .output()
        .expect("cannot run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    let root = repo_root();
    let packages = meta["packages"].as_array().expect("packages");
    let names: BTreeSet<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut graph = Graph::new();
    for p in packages {
        let name = p["name"].as_str().unwrap().to_string();
        let manifest = std::path::PathBuf::from(p["manifest_path"].as_str().unwrap());
        let folder = manifest
            .parent()
            .unwrap()
            .strip_prefix(&root)
            .unwrap_or_else(|_| panic!("{} is outside the workspace", manifest.display()))
            .display()
            .to_string();
        let mut normal = BTreeSet::new();
        let mut dev = BTreeSet::new();
        for d in p["dependencies"].as_array().unwrap() {
            let dep = d["name"].as_str().unwrap();
            if !names.contains(dep) {
                continue;
            }
            match d["kind"].as_str() {
                Some("dev") => dev.insert(dep.to_string()),
                _ => normal.insert(dep.to_string()),
            };
        }
        graph.insert(name, (folder, normal, dev));
    }
    graph
}

#[test]
fn the_documented_crate_graph_is_the_real_one() {
    let (doc, real) = (documented(), actual());
    let doc_names: BTreeSet<&String> = doc.keys().collect();
    let real_names: BTreeSet<&String> = real.keys().collect();
    assert_eq!(
        doc_names, real_names,
        "the crates in docs/ARCHITECTURE.md are not the workspace's"
    );
    let mut wrong = Vec::new();
    for (name, (folder, normal, dev)) in &real {
        let (dfolder, dnormal, ddev) = &doc[name];
        if dfolder != folder {
            wrong.push(format!("{name}: folder {folder}, documented {dfolder}"));
        }
        if dnormal != normal {
            wrong.push(format!(
                "{name}: depends on {normal:?}, documented {dnormal:?}"
            ));
        }
        if ddev != dev {
            wrong.push(format!(
                "{name}: tests depend on {dev:?}, documented {ddev:?}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/ARCHITECTURE.md is out of date:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn each_crate_lives_in_the_folder_its_name_ends_with() {
    for (name, (folder, _, _)) in actual() {
        let last = folder.rsplit('/').next().unwrap();
        let expected = [format!("twin-{last}"), format!("twin-fn-{last}")];
        assert!(
            expected.contains(&name),
            "{name} lives in {folder}: a crate's folder is named after it"
        );
    }
}
