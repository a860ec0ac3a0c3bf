//! What the browser tests share: finding their tools and data, and a `twin serve` with a
//! gallery imported, on a free loopback port. A missing tool or file is a failure that says how
//! to get it, never a skip.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The workspace root (found at run time: see `twin_tests::repo_root`).
pub fn repo_root() -> PathBuf {
    twin_tests::repo_root()
}

/// The shared test data: `$TWIN_TEST_DATA`, else `../shared/data` beside the repository.
pub fn shared_data() -> PathBuf {
    std::env::var_os("TWIN_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"))
}

/// The `twin` binary cargo built for the tests.
pub fn twin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_twin"))
}

/// `tests/browser`, where the scripts and their node packages are.
pub fn browser_dir() -> PathBuf {
    repo_root().join("tests/browser")
}

/// Checks Node.js and the given node packages, and finds Chromium (`$CHROMIUM`, else Debian's).
pub fn require_browser(packages: &[&str]) -> PathBuf {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "Node.js is not installed (node --version failed): run scripts/setup"
    );
    for package in packages {
        assert!(
            browser_dir()
                .join("node_modules")
                .join(package)
                .join("package.json")
                .is_file(),
            "{package} is not installed in tests/browser/node_modules: run scripts/setup"
        );
    }
    std::env::var_os("CHROMIUM")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .chain(["/usr/lib/chromium/chromium", "/usr/bin/chromium"].map(PathBuf::from))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("Chromium is not installed (/usr/lib/chromium/chromium, /usr/bin/chromium, or $CHROMIUM): run scripts/setup")
        })
}

/// Fails, naming each, when a piece of the shared test data is missing.
pub fn require_data(paths: &[&Path]) {
    for p in paths {
        assert!(
            p.exists(),
            "{} is missing (the shared test data; set TWIN_TEST_DATA to its folder)",
            p.display()
        );
    }
}

/// `target/<profile>/../browser-screenshots/<sub>`, emptied.
pub fn screenshots(sub: &str) -> PathBuf {
    let dir = twin()
        .parent()
        .and_then(Path::parent)
        .expect("the binary is in target/<profile>/")
        .join("browser-screenshots")
        .join(sub);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A running `twin serve`, killed when dropped however the test ends.
pub struct Server {
    child: Child,
    /// The page's address (`http://127.0.0.1:<port>/`).
    pub url: String,
    /// The API key writes need.
    pub key: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Imports `faces` into a gallery at `data` with `twin gallery import`, then serves it on a port
/// the system picks (read from the server's first stdout line) with a key of its own.
pub fn serve_gallery(data: &Path, faces: &Path, key_prefix: &str) -> Server {
    let imported = Command::new(twin())
        .arg("--data")
        .arg(data)
        .args(["gallery", "import"])
        .arg(faces)
        .stdout(Stdio::null())
        .status()
        .expect("twin runs");
    assert!(imported.success(), "twin gallery import failed");
    let key = format!("{key_prefix}-{}", std::process::id());
    let mut child = Command::new(twin())
        .arg("--data")
        .arg(data)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env("TWIN_API_KEY", &key)
        .stdout(Stdio::piped())
        .spawn()
        .expect("twin serve starts");
    let stdout = child.stdout.take().unwrap();
    let mut server = Server {
        child,
        url: String::new(),
        key,
    };
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
    server.url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "{}",
        server.url
    );
    server
}
