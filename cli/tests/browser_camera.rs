//! The page as people use it, in a real browser with a camera: headless Chromium whose fake
//! camera plays a clip of one person turning their head, driven by `playwright-core` from
//! `tests/browser/twin_camera.mjs`, against `twin serve` on a free loopback port with the gallery
//! of `../shared/data/faces` imported. It enrolls by filming, matches a photo taken with the
//! camera, shows why a dark video failed, shows names in other scripts as typed, runs axe-core on
//! every view and dialog, and works the camera dialog with the keyboard alone.
//!
//! The clips are cut from `short_hamilton_clip.mp4` by ffmpeg into a temporary folder (no media
//! is committed). Like the `browser` test it builds nothing itself and never skips: without
//! Node.js, Chromium, ffmpeg, `playwright-core` or `axe-core` (all installed by `scripts/setup`)
//! it fails and says so. Screenshots go to `target/browser-screenshots/camera/`.

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

/// Cuts `out` from `clip` with ffmpeg: `start` and `seconds` into the clip, no sound, through
/// the filter `vf`, as 4:2:0 (what Chromium's fake camera reads from a Y4M file).
fn cut(clip: &Path, start: &str, seconds: &str, vf: &str, out: &Path) {
    let made = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y"])
        .args(["-ss", start, "-t", seconds, "-i"])
        .arg(clip)
        .args(["-an", "-vf", vf, "-pix_fmt", "yuv420p"])
        .arg(out)
        .status()
        .expect("ffmpeg runs");
    assert!(made.success(), "ffmpeg could not make {}", out.display());
}

#[test]
fn page_enrolls_and_matches_with_the_camera_accessibly() {
    let browser_dir = repo_root().join("tests/browser");
    // What the test needs, each a failure (never a skip) that says how to get it.
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "Node.js is not installed (node --version failed): run scripts/setup"
    );
    let ffmpeg = Command::new("ffmpeg").arg("-version").output();
    assert!(
        ffmpeg.as_ref().is_ok_and(|o| o.status.success()),
        "ffmpeg is not installed (ffmpeg -version failed): run scripts/setup"
    );
    let chromium = chromium()
        .filter(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("Chromium is not installed (/usr/lib/chromium/chromium, /usr/bin/chromium, or $CHROMIUM): run scripts/setup")
        });
    for package in ["playwright-core", "axe-core"] {
        assert!(
            browser_dir
                .join("node_modules")
                .join(package)
                .join("package.json")
                .is_file(),
            "{package} is not installed in tests/browser/node_modules: run scripts/setup"
        );
    }
    let data = shared_data();
    let faces = data.join("faces");
    let clip = data.join("media/short_hamilton_clip.mp4");
    for p in [&faces, &clip] {
        assert!(
            p.exists(),
            "{} is missing (the shared test data; set TWIN_TEST_DATA to its folder)",
            p.display()
        );
    }
    // Beside the `browser` test's screenshots, which that test clears when it starts.
    let screenshots = twin()
        .parent()
        .and_then(Path::parent)
        .expect("the binary is in target/<profile>/")
        .join("browser-screenshots/camera");
    let _ = std::fs::remove_dir_all(&screenshots);

    // The clips. From 3.5 s for 4.4 s the clip shows one face, near-frontal, turning to both
    // sides: the fake camera loops it. 4 s of the same stretch darkened to 30 % is too dark to
    // enroll. The second from 4.15 s turns the head to one side only; slowed down 3× it gives
    // enough frames to enroll.
    let dir = tempfile::tempdir().unwrap();
    let camera = dir.path().join("camera.y4m");
    let dark = dir.path().join("dark.mp4");
    let noturn = dir.path().join("noturn.mp4");
    cut(&clip, "3.5", "4.4", "fps=15", &camera);
    cut(&clip, "3.5", "4", "lutyuv=y=val*0.3", &dark);
    cut(&clip, "4.15", "1", "setpts=3*PTS", &noturn);

    // The gallery, imported by the command line.
    let store = dir.path().join("data");
    let imported = Command::new(twin())
        .arg("--data")
        .arg(&store)
        .args(["gallery", "import"])
        .arg(&faces)
        .stdout(Stdio::null())
        .status()
        .expect("twin runs");
    assert!(imported.success(), "twin gallery import failed");

    // The server, on a port the system picks; its first stdout line is the page's address.
    let key = format!("camera-test-key-{}", std::process::id());
    let mut child = Command::new(twin())
        .arg("--data")
        .arg(&store)
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

    let output = Command::new("node")
        .arg("twin_camera.mjs")
        .current_dir(&browser_dir)
        .env("TWIN_URL", &url)
        .env("TWIN_API_KEY", &key)
        .env("TWIN_CAMERA_Y4M", &camera)
        .env("TWIN_DARK_VIDEO", &dark)
        .env("TWIN_NOTURN_VIDEO", &noturn)
        .env("TWIN_SCREENSHOTS", &screenshots)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .output()
        .expect("node runs");
    drop(server);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    assert!(
        output.status.success(),
        "the camera browser test failed (screenshots in {}):\n{stdout}{stderr}",
        screenshots.display()
    );
}
