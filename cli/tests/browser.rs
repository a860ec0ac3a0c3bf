//! The web page in a real browser: headless Chromium, driven by `playwright-core` from
//! `tests/browser/twin_page.mjs`, against `twin serve` on a free loopback port with the
//! gallery of `../shared/data/faces` imported.
//!
//! This test builds nothing itself and never skips: without Node.js, Chromium or
//! `playwright-core` (all installed by `scripts/setup`) it fails and says so. Screenshots go to
//! `target/browser-screenshots/`.

mod common;

use std::process::Command;

use common::{browser_dir, require_browser, require_data, screenshots, serve_gallery, shared_data};

#[test]
fn page_matches_enrolls_erases_in_chromium() {
    let chromium = require_browser(&["playwright-core"]);
    let data = shared_data();
    let faces = data.join("faces");
    let media = data.join("media");
    require_data(&[
        &faces,
        &media.join("obama.jpg"),
        &media.join("short_hamilton_clip.mp4"),
        &media.join("lin-manuel-miranda.png"),
    ]);
    let screenshots = screenshots("");
    let dir = tempfile::tempdir().unwrap();
    let server = serve_gallery(dir.path(), &faces, "browser-test-key");

    let status = Command::new("node")
        .arg("twin_page.mjs")
        .current_dir(browser_dir())
        .env("TWIN_URL", &server.url)
        .env("TWIN_API_KEY", &server.key)
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
