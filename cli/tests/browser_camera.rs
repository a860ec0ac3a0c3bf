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

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{browser_dir, require_browser, require_data, screenshots, serve_gallery, shared_data};

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
    let chromium = require_browser(&["playwright-core", "axe-core"]);
    let ffmpeg = Command::new("ffmpeg").arg("-version").output();
    assert!(
        ffmpeg.as_ref().is_ok_and(|o| o.status.success()),
        "ffmpeg is not installed (ffmpeg -version failed): run scripts/setup"
    );
    let data = shared_data();
    let faces = data.join("faces");
    let clip = data.join("media/short_hamilton_clip.mp4");
    require_data(&[&faces, &clip]);
    // Beside the `browser` test's screenshots, which that test clears when it starts.
    let screenshots = screenshots("camera");

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

    // The gallery and the server.
    let server = serve_gallery(&dir.path().join("data"), &faces, "camera-test-key");

    let output = Command::new("node")
        .arg("twin_camera.mjs")
        .current_dir(browser_dir())
        .env("TWIN_URL", &server.url)
        .env("TWIN_API_KEY", &server.key)
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
