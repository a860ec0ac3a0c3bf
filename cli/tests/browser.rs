//! The web page in a real browser: headless Chromium, driven by `playwright-core` from
//! `tests/browser/twin_page.mjs`, against `twin serve` on a free loopback port with the
//! gallery of `../shared/data/faces` imported.
//!
//! This test builds nothing itself and never skips: without Node.js, Chromium or
//! `playwright-core` (all installed by `scripts/setup`) it fails and says so. Screenshots go to
//! `target/browser-screenshots/`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli is inside the workspace")
        .to_path_buf()
}

/// The shared test data: `$TWIN_TEST_DATA`, else `../shared/data` beside the repository.
fn shared_data() -> PathBuf {
    std::env::var_os("TWIN_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"))
}

fn twin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_twin"))
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

#[test]
fn page_matches_enrolls_erases_in_chromium() {
    let browser_dir = repo_root().join("tests/browser");
    // What the test needs, each a failure (never a skip) that says how to get it.
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "Node.js is not installed (node --version failed): run scripts/setup"
    );
    let chromium = chromium()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("Chromium is not installed (/usr/lib/chromium/chromium, /usr/bin/chromium, or $CHROMIUM): run scripts/setup")
        });
    assert!(
        browser_dir
            .join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is not installed in tests/browser/node_modules: run scripts/setup"
    );
    let data = shared_data();
    let faces = data.join("faces");
    let media = data.join("media");
    for p in [
        faces.clone(),
        media.join("obama.jpg"),
        media.join("short_hamilton_clip.mp4"),
        media.join("lin-manuel-miranda.png"),
    ] {
        assert!(
            p.exists(),
            "{} is missing (the shared test data; set TWIN_TEST_DATA to its folder)",
            p.display()
        );
    }
    let screenshots = twin()
        .parent()
        .and_then(Path::parent)
        .expect("the binary is in target/<profile>/")
        .join("browser-screenshots");
    let _ = std::fs::remove_dir_all(&screenshots);

    // The gallery, imported by the command line.
    let dir = tempfile::tempdir().unwrap();
    let imported = Command::new(twin())
        .arg("--data")
        .arg(dir.path())
        .args(["gallery", "import"])
        .arg(&faces)
        .stdout(Stdio::null())
        .status()
        .expect("twin runs");
    assert!(imported.success(), "twin gallery import failed");

    // The server, on a port the system picks; its first stdout line is the page's address.
    let key = format!("browser-test-key-{}", std::process::id());
    let mut child = Command::new(twin())
        .arg("--data")
        .arg(dir.path())
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env("TWIN_API_KEY", &key)
        .stdout(Stdio::piped())
        .spawn()
        .expect("twin serve starts");
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("twin serve printed its address within 120 s");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let status = Command::new("node")
        .arg("twin_page.mjs")
        .current_dir(&browser_dir)
        .env("TWIN_URL", &url)
        .env("TWIN_API_KEY", &key)
        .env("TWIN_MEDIA", &media)
        .env("TWIN_SCREENSHOTS", &screenshots)
        .env("CHROMIUM", &chromium)
        .status()
        .expect("node runs");
    drop(server);
    assert!(
        status.success(),
        "the browser test failed (see its output above; screenshots in {})",
        screenshots.display()
    );
}
