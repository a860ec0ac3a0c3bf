//! Every route of the HTTP API, in process (`oneshot` on the router), over a real system: the
//! real face pipeline and embedding network on a small gallery imported from
//! `../shared/data/faces`, photos from `../shared/data/media`.
//!
//! The read and error tests share one gallery and check, by comparing every file of its data
//! folder before and after, that no refused request changed anything. The write test
//! (enroll → match → erase) has a data folder of its own. Missing models or data fail the
//! tests (run `scripts/setup`); nothing is skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;
use twin_app::local::{Local, LocalConfig};
use twin_http::{router, Api, HttpConfig, Uploads};
use twin_tests::resources::png_header_only;

const KEY: &str = "test-key-0123456789";
const IDENTITIES: [&str; 3] = ["Barack_Obama", "Simon_Cowell", "Tina_Fey"];

fn shared_data(rel: &str) -> PathBuf {
    let p = twin_tests::data_dir().join(rel);
    assert!(p.exists(), "test data {} is missing", p.display());
    p
}

fn media(name: &str) -> Vec<u8> {
    std::fs::read(shared_data("media").join(name)).unwrap()
}

fn models() -> PathBuf {
    twin_tests::models_dir()
}

fn config(data: &Path) -> LocalConfig {
    LocalConfig::new(data.to_path_buf(), models(), 1)
}

/// Imports four photos of each of [`IDENTITIES`] into the system.
fn import_small_gallery(sys: &Local, scratch: &Path) {
    let faces = scratch.join("faces");
    for who in IDENTITIES {
        let src = shared_data("faces").join(who);
        let dst = faces.join(who);
        std::fs::create_dir_all(&dst).unwrap();
        for n in 1..=4 {
            std::fs::copy(src.join(format!("{n}.jpg")), dst.join(format!("{n}.jpg"))).unwrap();
        }
    }
    let summary = sys.import.folder(&faces, &|_, _| {}).unwrap();
    assert_eq!(summary.identities, IDENTITIES.len());
}

/// The shared, read-only system: a gallery of three people.
fn shared() -> &'static (PathBuf, Arc<Local>) {
    static SHARED: OnceLock<(PathBuf, Arc<Local>)> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("http_routes_shared");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data");
        let sys = Local::open(config(&data)).unwrap();
        import_small_gallery(&sys, &dir);
        (data, sys)
    })
}

/// The local host's uploads, writes refused without a key.
fn http_config(sys: &Arc<Local>) -> HttpConfig {
    HttpConfig::new(Uploads::Here(sys.clone()))
}

fn app(sys: &Arc<Local>) -> Router {
    let mut config = http_config(sys);
    config.api_key = Some(KEY.into());
    router(Api::local(sys), config)
}

/// Every file (with its bytes) and folder under `dir`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            if p.is_dir() {
                out.insert(rel, None);
                stack.push(p);
            } else {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            )
        })
    }

    /// Asserts an error response of this status and code; returns its message.
    fn error(&self, status: u16, code: &str) -> String {
        let v = self.json();
        assert_eq!(
            (self.status.as_u16(), v["error"]["code"].as_str()),
            (status, Some(code)),
            "{v}"
        );
        assert_eq!(
            self.headers[header::CONTENT_TYPE],
            "application/json",
            "errors are JSON"
        );
        let message = v["error"]["message"].as_str().unwrap().to_string();
        assert!(!message.is_empty());
        message
    }
}

async fn send(app: &Router, req: Request<Body>) -> Reply {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn with_body(
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = content_type {
        b = b.header(header::CONTENT_TYPE, t);
    }
    b.body(body.into()).unwrap()
}

/// As sent by this machine's browser or tools to `localhost:8080`: a loopback peer and `Host`.
fn from_here(mut req: Request<Body>) -> Request<Body> {
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 50_000))));
    req.headers_mut()
        .insert(header::HOST, "localhost:8080".parse().unwrap());
    req
}

fn keyed(mut req: Request<Body>, key: &str) -> Request<Body> {
    req.headers_mut().insert("x-api-key", key.parse().unwrap());
    req
}

/// A `multipart/form-data` body with one file field.
fn form(field: &str, file_type: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----twin-test-boundary-7d3f";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"photo\"\r\nContent-Type: {file_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A photo of a wall: decodes fine, shows no face (and is larger than the small tight crops
/// the pipeline takes whole when it finds nothing).
fn faceless_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([(100 + x / 8) as u8, (90 + y / 8) as u8, 100])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

// -------------------------------------------------------------------------------------------

#[tokio::test]
async fn page_assets_and_openapi() {
    let (_, sys) = shared();
    let app = app(sys);
    let r = send(&app, get("/")).await;
    assert_eq!(r.status, 200);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(html.contains("<script src=\"/app.js\""));
    for (path, kind) in [
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let r = send(&app, get(path)).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    // The OpenAPI document names exactly the API's routes.
    let r = send(&app, get("/v1/openapi.json")).await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut routes: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.push((method.to_uppercase(), path.clone()));
        }
    }
    routes.sort();
    let expected = [
        ("DELETE", "/v1/identities/{slug}"),
        ("GET", "/v1/crops/{slug}/{upload_id}/{file}"),
        ("GET", "/v1/enrollments/{upload_id}"),
        ("GET", "/v1/identities"),
        ("GET", "/v1/identities/{slug}"),
        ("GET", "/v1/models"),
        ("GET", "/v1/openapi.json"),
        ("POST", "/v1/enrollments"),
        ("POST", "/v1/match"),
        ("POST", "/v1/models/{version}/promote"),
        ("PUT", "/v1/uploads/{upload_id}"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(routes, expected);
}

#[tokio::test]
async fn match_a_photo_raw_and_as_a_form() {
    let (_, sys) = shared();
    let app = app(sys);
    let photo = media("obama.jpg");

    let raw = send(
        &app,
        with_body(Method::POST, "/v1/match", Some("image/jpeg"), photo.clone()),
    )
    .await;
    assert_eq!(raw.status, 200, "{:?}", raw.body);
    let v = raw.json();
    assert_eq!(v["faces"].as_array().unwrap().len(), 1);
    let face = &v["faces"][0];
    let b: Vec<i64> = serde_json::from_value(face["box"].clone()).unwrap();
    let (w, h) = (v["width"].as_i64().unwrap(), v["height"].as_i64().unwrap());
    assert!(
        b[2] > 50 && b[0] >= 0 && b[1] >= 0 && b[0] + b[2] <= w && b[1] + b[3] <= h,
        "{b:?}"
    );
    let matches = face["matches"].as_array().unwrap();
    assert_eq!(matches.len(), IDENTITIES.len(), "k=5 but only three people");
    assert_eq!(matches[0]["slug"], "barack_obama");
    assert_eq!(matches[0]["display_name"], "Barack Obama");
    assert_eq!(matches[0]["same_person"], true);
    assert_eq!(matches[1]["same_person"], false);
    let url = matches[0]["crop_url"].as_str().unwrap();
    assert_eq!(url, format!("/v1/{}", matches[0]["crop"].as_str().unwrap()));

    // The picture behind the URL.
    let pic = send(&app, get(url)).await;
    assert_eq!(pic.status, 200);
    assert_eq!(pic.headers[header::CONTENT_TYPE], "image/png");
    assert!(pic.body.starts_with(b"\x89PNG"));

    // The same photo as a browser's form upload.
    let (ct, body) = form("file", "image/jpeg", &photo);
    let formed = send(
        &app,
        with_body(Method::POST, "/v1/match?k=2", Some(&ct), body),
    )
    .await;
    assert_eq!(formed.status, 200);
    let f = formed.json();
    assert_eq!(f["faces"][0]["matches"].as_array().unwrap().len(), 2);
    assert_eq!(f["faces"][0]["matches"][0], v["faces"][0]["matches"][0]);
    // An untyped form file is read by its content.
    let (ct, body) = form("file", "application/octet-stream", &photo);
    let r = send(
        &app,
        with_body(Method::POST, "/v1/match?k=1", Some(&ct), body),
    )
    .await;
    assert_eq!(r.status, 200);

    // The same photo five times larger (well over the pixels the search works on): scaled down
    // for the search, answered in its own pixels.
    let small = image::load_from_memory(&photo).unwrap().to_rgb8();
    let large = image::imageops::resize(
        &small,
        small.width() * 5,
        small.height() * 5,
        image::imageops::FilterType::Triangle,
    );
    assert!(large.width() as u64 * large.height() as u64 > 4 * twin_app::matching::SEARCH_PIXELS);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&large)
        .unwrap();
    let big = send(
        &app,
        with_body(Method::POST, "/v1/match", Some("image/jpeg"), jpeg),
    )
    .await;
    assert_eq!(big.status, 200, "{:?}", big.body);
    let g = big.json();
    assert_eq!(
        (g["width"].as_i64(), g["height"].as_i64()),
        (Some(w * 5), Some(h * 5))
    );
    assert_eq!(g["faces"][0]["matches"][0]["slug"], "barack_obama");
    let gb: Vec<i64> = serde_json::from_value(g["faces"][0]["box"].clone()).unwrap();
    for (big, small) in gb.iter().zip(&b) {
        assert!(
            (big - small * 5).abs() <= b[2] * 5 / 10,
            "box {gb:?} is not {b:?} × 5"
        );
    }
}

#[tokio::test]
async fn gallery_models_and_crops() {
    let (_, sys) = shared();
    let app = app(sys);
    let page = send(&app, get("/v1/identities")).await.json();
    assert_eq!(page["total"], 3);
    let slugs: Vec<&str> = page["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["barack_obama", "simon_cowell", "tina_fey"]);
    for i in page["identities"].as_array().unwrap() {
        assert_eq!(i["crops"], 4);
        let url = i["picture_url"].as_str().unwrap();
        assert_eq!(send(&app, get(url)).await.status, 200, "{url}");
    }
    let second = send(&app, get("/v1/identities?offset=1&limit=1"))
        .await
        .json();
    assert_eq!(second["total"], 3);
    assert_eq!(second["offset"], 1);
    assert_eq!(second["identities"][0]["slug"], "simon_cowell");
    assert_eq!(second["identities"].as_array().unwrap().len(), 1);

    let one = send(&app, get("/v1/identities/tina_fey")).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["display_name"], "Tina Fey");

    let models = send(&app, get("/v1/models")).await;
    assert_eq!(models.status, 200);
    assert!(models.json()["current"].is_string());
}

/// Every refusal, each with a clear message, and none changes a byte of the data folder.
#[tokio::test]
async fn refusals_change_nothing() {
    let (data, sys) = shared();
    let app = app(sys);
    let before = snapshot(data);
    let photo = media("obama.jpg");

    // 415: not an image, by declared type or by content.
    let m = send(
        &app,
        with_body(Method::POST, "/v1/match", Some("text/plain"), "hello"),
    )
    .await
    .error(415, "unsupported_media_type");
    assert!(m.contains("JPEG, PNG or WebP"), "{m}");
    send(
        &app,
        with_body(Method::POST, "/v1/match", None, photo.clone()),
    )
    .await
    .error(415, "unsupported_media_type");
    send(
        &app,
        with_body(
            Method::POST,
            "/v1/match",
            Some("image/gif"),
            &b"GIF89a\x01\x00"[..],
        ),
    )
    .await
    .error(415, "unsupported_media_type");
    send(
        &app,
        with_body(
            Method::POST,
            "/v1/match",
            Some("image/jpeg"),
            "not really a jpeg",
        ),
    )
    .await
    .error(415, "unsupported_media_type");
    let (ct, body) = form("file", "text/plain", b"hello");
    send(&app, with_body(Method::POST, "/v1/match", Some(&ct), body))
        .await
        .error(415, "unsupported_media_type");

    // 413: too large, declared or not.
    let big = vec![0xFFu8; 10 * 1024 * 1024 + 1];
    let mut declared = with_body(Method::POST, "/v1/match", Some("image/jpeg"), Body::empty());
    declared
        .headers_mut()
        .insert(header::CONTENT_LENGTH, (big.len() as u64).into());
    let m = send(&app, declared).await.error(413, "too_large");
    assert!(m.contains("10 MB"), "{m}");
    send(
        &app,
        with_body(Method::POST, "/v1/match", Some("image/jpeg"), big.clone()),
    )
    .await
    .error(413, "too_large");
    let (ct, body) = form("file", "image/jpeg", &big);
    send(&app, with_body(Method::POST, "/v1/match", Some(&ct), body))
        .await
        .error(413, "too_large");

    // 422: no face, and a damaged photo, with messages for people.
    let m = send(
        &app,
        with_body(Method::POST, "/v1/match", Some("image/png"), faceless_png()),
    )
    .await
    .error(422, "no_face");
    assert!(m.starts_with("No face was found in this photo"), "{m}");
    let m = send(
        &app,
        with_body(
            Method::POST,
            "/v1/match",
            Some("image/jpeg"),
            photo[..photo.len() / 3].to_vec(),
        ),
    )
    .await
    .error(422, "bad_image");
    assert!(m.contains("try another photo"), "{m}");

    // 400: bad requests.
    send(
        &app,
        with_body(Method::POST, "/v1/match", Some("image/jpeg"), Body::empty()),
    )
    .await
    .error(400, "bad_request");
    send(
        &app,
        with_body(
            Method::POST,
            "/v1/match?k=0",
            Some("image/jpeg"),
            photo.clone(),
        ),
    )
    .await
    .error(400, "bad_request");
    send(
        &app,
        with_body(
            Method::POST,
            "/v1/match?k=21",
            Some("image/jpeg"),
            photo.clone(),
        ),
    )
    .await
    .error(400, "bad_request");
    send(
        &app,
        with_body(
            Method::POST,
            "/v1/match?k=many",
            Some("image/jpeg"),
            photo.clone(),
        ),
    )
    .await
    .error(400, "bad_request");
    let (ct, body) = form("photo", "image/jpeg", &photo);
    let m = send(&app, with_body(Method::POST, "/v1/match", Some(&ct), body))
        .await
        .error(400, "bad_request");
    assert!(m.contains("\"file\""), "{m}");
    send(&app, get("/v1/identities?limit=0"))
        .await
        .error(400, "bad_request");
    send(&app, get("/v1/identities?limit=201"))
        .await
        .error(400, "bad_request");
    send(&app, get("/v1/identities?offset=-1"))
        .await
        .error(400, "bad_request");

    // 404: unknown things.
    let m = send(&app, get("/v1/identities/nobody_here"))
        .await
        .error(404, "not_found");
    assert!(m.contains("nobody_here"), "{m}");
    send(&app, get("/v1/identities/Not%20A%20Slug"))
        .await
        .error(404, "not_found");
    send(&app, get("/v1/identities/..%2F..%2Fetc"))
        .await
        .error(404, "not_found");
    send(&app, get("/v1/enrollments/0123456789abcdef"))
        .await
        .error(404, "not_found");
    send(&app, get("/v1/enrollments/NOT_AN_ID"))
        .await
        .error(404, "not_found");
    send(&app, get("/v1/crops/barack_obama/nope/1.png"))
        .await
        .error(404, "not_found");
    send(&app, get("/v1/crops/barack_obama/nope/..png"))
        .await
        .error(404, "not_found");
    send(&app, get("/v1/crops/..%2Fdataset/x/1.png"))
        .await
        .error(404, "not_found");
    let page = send(&app, get("/v1/identities")).await.json();
    let crop = page["identities"][0]["picture"]
        .as_str()
        .unwrap()
        .to_string();
    let padded = crop.replace("/1.png", "/01.png");
    send(&app, get(&format!("/v1/{padded}")))
        .await
        .error(404, "not_found");
    send(&app, get("/v1/nothing")).await.error(404, "not_found");
    send(&app, get("/etc/passwd")).await.error(404, "not_found");
    send(
        &app,
        keyed(
            with_body(
                Method::DELETE,
                "/v1/identities/nobody_here",
                None,
                Body::empty(),
            ),
            KEY,
        ),
    )
    .await
    .error(404, "not_found");
    send(
        &app,
        keyed(
            with_body(
                Method::PUT,
                "/v1/uploads/0123456789abcdef",
                Some("video/mp4"),
                "x",
            ),
            KEY,
        ),
    )
    .await
    .error(404, "not_found");

    // 405.
    send(
        &app,
        with_body(Method::PUT, "/v1/models", None, Body::empty()),
    )
    .await
    .error(405, "method_not_allowed");
    send(&app, get("/v1/match"))
        .await
        .error(405, "method_not_allowed");

    // 401: writes without the key, with a wrong one, or on a server that has none.
    let enroll = || {
        with_body(
            Method::POST,
            "/v1/enrollments",
            Some("application/json"),
            r#"{"name":"Ada Lovelace"}"#,
        )
    };
    let m = send(&app, enroll()).await.error(401, "unauthorized");
    assert!(m.contains("x-api-key"), "{m}");
    let r = send(&app, keyed(enroll(), "wrong-key")).await;
    assert_eq!(r.error(401, "unauthorized"), "this API key is not valid");
    assert!(r.headers.contains_key(header::WWW_AUTHENTICATE));
    let mut bearer_wrong = enroll();
    bearer_wrong
        .headers_mut()
        .insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
    send(&app, bearer_wrong).await.error(401, "unauthorized");
    send(
        &app,
        with_body(
            Method::DELETE,
            "/v1/identities/barack_obama",
            None,
            Body::empty(),
        ),
    )
    .await
    .error(401, "unauthorized");
    send(
        &app,
        keyed(
            with_body(
                Method::DELETE,
                "/v1/identities/barack_obama",
                None,
                Body::empty(),
            ),
            "wrong",
        ),
    )
    .await
    .error(401, "unauthorized");
    send(
        &app,
        with_body(
            Method::PUT,
            "/v1/uploads/0123456789abcdef",
            Some("video/mp4"),
            "x",
        ),
    )
    .await
    .error(401, "unauthorized");
    let keyless = router(Api::local(sys), http_config(sys));
    let m = send(&keyless, keyed(enroll(), KEY))
        .await
        .error(401, "unauthorized");
    assert!(
        m.contains("TWIN_API_KEY") && m.contains("--allow-writes-without-key"),
        "{m}"
    );
    send(
        &keyless,
        with_body(
            Method::DELETE,
            "/v1/identities/barack_obama",
            None,
            Body::empty(),
        ),
    )
    .await
    .error(401, "unauthorized");

    // Past the key, bad enrollment requests (also on a server that allows writes without one).
    let m = send(
        &app,
        keyed(
            with_body(
                Method::POST,
                "/v1/enrollments",
                Some("application/json"),
                r#"{"name":"!!!"}"#,
            ),
            KEY,
        ),
    )
    .await
    .error(400, "bad_request");
    assert!(m.contains("letter or digit"), "{m}");
    send(
        &app,
        keyed(
            with_body(
                Method::POST,
                "/v1/enrollments",
                Some("application/json"),
                r#"{"nom":"Ada"}"#,
            ),
            KEY,
        ),
    )
    .await
    .error(400, "bad_request");
    send(
        &app,
        keyed(
            with_body(
                Method::POST,
                "/v1/enrollments",
                Some("application/json"),
                "{",
            ),
            KEY,
        ),
    )
    .await
    .error(400, "bad_request");
    send(
        &app,
        keyed(
            with_body(
                Method::POST,
                "/v1/enrollments",
                Some("text/plain"),
                r#"{"name":"Ada"}"#,
            ),
            KEY,
        ),
    )
    .await
    .error(415, "unsupported_media_type");
    let mut open_config = http_config(sys);
    open_config.allow_writes_without_key = true;
    let open = router(Api::local(sys), open_config);
    send(
        &open,
        from_here(with_body(
            Method::POST,
            "/v1/enrollments",
            Some("application/json"),
            r#"{"name":""}"#,
        )),
    )
    .await
    .error(400, "bad_request");
    send(
        &open,
        from_here(with_body(
            Method::POST,
            "/v1/enrollments",
            Some("application/json"),
            format!(r#"{{"name":"{}"}}"#, "x".repeat(101)),
        )),
    )
    .await
    .error(400, "bad_request");

    // Reads in between changed nothing either.
    assert_eq!(send(&app, get("/v1/identities")).await.json()["total"], 3);
    let after = snapshot(data);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "files were added or removed"
    );
    assert!(before == after, "a file changed");
}

/// `POST /v1/enrollments` with the key and `body` as JSON.
fn enroll_json(body: impl Into<Body>) -> Request<Body> {
    keyed(
        with_body(
            Method::POST,
            "/v1/enrollments",
            Some("application/json"),
            body,
        ),
        KEY,
    )
}

/// The bad input matrix's HTTP rows beyond [`refusals_change_nothing`]: odd JSON, names, photos,
/// forms, paths, methods and queries, each refused with its status and code, and none changes a
/// byte of the data folder.
#[tokio::test]
async fn odd_requests_are_refused_and_change_nothing() {
    let (data, sys) = shared();
    let app = app(sys);
    let before = snapshot(data);

    // JSON bodies that are not an enrollment request: 400, whatever their shape.
    let bodies: Vec<(&str, Vec<u8>, &str)> = vec![
        ("an array", b"[]".to_vec(), "expected fields"),
        ("a number", b"42".to_vec(), "expected fields"),
        ("a string", br#""Ada""#.to_vec(), "expected fields"),
        ("null", b"null".to_vec(), "expected fields"),
        (
            "invalid UTF-8",
            b"{\"name\":\"Ad\xff\xfe\"}".to_vec(),
            "not valid JSON",
        ),
        (
            "a lone surrogate",
            br#"{"name":"Ada\ud800"}"#.to_vec(),
            "not valid JSON",
        ),
        (
            "a duplicated key",
            br#"{"name":"Ada","name":"Eve"}"#.to_vec(),
            "duplicate field",
        ),
        (
            "a name that is a number",
            br#"{"name":42}"#.to_vec(),
            "expected fields",
        ),
        (
            "a null name",
            br#"{"name":null}"#.to_vec(),
            "expected fields",
        ),
        (
            "trailing bytes",
            br#"{"name":"Ada"} {"name":"Eve"}"#.to_vec(),
            "not valid JSON",
        ),
        ("an empty body", Vec::new(), "not valid JSON"),
        (
            "a control character",
            br#"{"name":"Ada\u0007"}"#.to_vec(),
            "control characters",
        ),
        (
            "a line break",
            br#"{"name":"Ada\nLovelace"}"#.to_vec(),
            "control characters",
        ),
        (
            "only spaces",
            br#"{"name":"     "}"#.to_vec(),
            "letter or digit",
        ),
        (
            "only a zero-width space",
            br#"{"name":"\u200b"}"#.to_vec(),
            "letter or digit",
        ),
        (
            "300 characters",
            format!(r#"{{"name":"{}"}}"#, "y".repeat(300)).into_bytes(),
            "at most 100",
        ),
        (
            "an isolate that reorders text",
            br#"{"name":"Ada\u2067evil\u2069"}"#.to_vec(),
            "direction",
        ),
    ];
    for (what, body, says) in bodies {
        let m = send(&app, enroll_json(body))
            .await
            .error(400, "bad_request");
        assert!(m.contains(says), "{what}: {m}");
    }
    // A JSON body over the 2 MB a JSON request may have.
    let big = format!(r#"{{"name":"{}"}}"#, "a".repeat(3 * 1024 * 1024));
    send(&app, enroll_json(big)).await.error(413, "too_large");
    // Joining someone who is not there, by a name that is no slug at all.
    let m = send(&app, enroll_json(r#"{"name":"Ada","join":"../tina_fey"}"#))
        .await
        .error(404, "not_found");
    assert!(m.contains("no person"), "{m}");

    // Photos that announce themselves as one but are not one we read.
    let photo_refusals: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "a 30 000 × 30 000 PNG header",
            "image/png",
            png_header_only(30_000, 30_000),
            413,
            "too_large",
        ),
        (
            "a JPEG start marker alone",
            "image/jpeg",
            vec![0xFF, 0xD8, 0xFF],
            422,
            "bad_image",
        ),
        (
            "a PNG header without pixels",
            "image/png",
            png_header_only(64, 64),
            422,
            "bad_image",
        ),
        (
            "a WebP container without a picture",
            "image/webp",
            b"RIFF\x10\x00\x00\x00WEBPVP8 garbage!".to_vec(),
            422,
            "bad_image",
        ),
        (
            "a BMP sent as PNG",
            "image/png",
            b"BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "an HEIC photo",
            "image/heic",
            b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "an SVG",
            "image/svg+xml",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec(),
            415,
            "unsupported_media_type",
        ),
    ];
    for (what, content_type, body, status, code) in photo_refusals {
        let r = send(
            &app,
            with_body(Method::POST, "/v1/match", Some(content_type), body),
        )
        .await;
        let m = r.error(status, code);
        println!("{what}: {status} {code}: {m}");
    }
    // A one-pixel photo: read, and no face in it.
    let mut one = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(1, 1, image::Rgb([200, 160, 140]))
        .write_to(&mut one, image::ImageFormat::Png)
        .unwrap();
    send(
        &app,
        with_body(
            Method::POST,
            "/v1/match",
            Some("image/png"),
            one.into_inner(),
        ),
    )
    .await
    .error(422, "no_face");

    // Forms that cannot be read.
    send(
        &app,
        with_body(
            Method::POST,
            "/v1/match",
            Some("multipart/form-data"),
            "--x\r\n\r\n",
        ),
    )
    .await
    .error(400, "bad_request");
    let m = send(
        &app,
        with_body(
            Method::POST,
            "/v1/match",
            Some("multipart/form-data; boundary=twin"),
            "this is no form at all",
        ),
    )
    .await
    .error(400, "bad_request");
    assert!(m.contains("multipart/form-data"), "{m}");
    let (ct, body) = form("file", "image/jpeg", b"");
    let m = send(&app, with_body(Method::POST, "/v1/match", Some(&ct), body))
        .await
        .error(400, "bad_request");
    assert!(m.contains("empty"), "{m}");

    // Query parameters out of range or twice.
    for uri in [
        "/v1/match?k=-1",
        "/v1/match?k=99999999999999999999999",
        "/v1/match?k=1&k=2",
    ] {
        send(
            &app,
            with_body(Method::POST, uri, Some("image/jpeg"), media("obama.jpg")),
        )
        .await
        .error(400, "bad_request");
    }
    send(&app, get("/v1/identities?offset=99999999999999999999999"))
        .await
        .error(400, "bad_request");
    // A page past the end is empty, not an error; a huge unknown parameter is ignored.
    let past = send(&app, get("/v1/identities?offset=1000")).await;
    assert_eq!(past.status, 200);
    assert_eq!(past.json()["identities"], serde_json::json!([]));
    assert_eq!(past.json()["total"], 3);
    let long = format!("/v1/identities?padding={}", "z".repeat(60_000));
    assert_eq!(send(&app, get(&long)).await.json()["total"], 3);

    // Paths whose ids are not ids.
    let long_slug = format!("/v1/identities/{}", "a".repeat(65));
    let long_id = format!("/v1/enrollments/{}", "a".repeat(65));
    for uri in [
        long_slug.as_str(),
        "/v1/identities/a%00b",
        "/v1/identities/%FF%FE",
        "/v1/identities/TINA_FEY",
        long_id.as_str(),
        "/v1/enrollments/..",
        "/v1/crops/tina_fey/x/1.png/more",
        "/v1/identities/tina_fey/",
    ] {
        send(&app, get(uri)).await.error(404, "not_found");
    }
    for version in ["abc", "-1", "1.0", "9999999999999", "0x10"] {
        send(
            &app,
            keyed(
                with_body(
                    Method::POST,
                    &format!("/v1/models/{version}/promote"),
                    None,
                    Body::empty(),
                ),
                KEY,
            ),
        )
        .await
        .error(404, "not_found");
    }
    send(
        &app,
        keyed(
            with_body(Method::PUT, "/v1/uploads/NOT_AN_ID", Some("video/mp4"), "x"),
            KEY,
        ),
    )
    .await
    .error(404, "not_found");

    // Methods a route does not have.
    for (method, uri) in [
        (Method::OPTIONS, "/v1/match"),
        (Method::PATCH, "/v1/identities/tina_fey"),
        (Method::DELETE, "/v1/identities"),
        (Method::TRACE, "/v1/identities"),
        (Method::POST, "/v1/openapi.json"),
    ] {
        send(&app, with_body(method, uri, None, Body::empty()))
            .await
            .error(405, "method_not_allowed");
    }
    // HEAD is GET without the body.
    let head = send(
        &app,
        with_body(Method::HEAD, "/v1/identities", None, Body::empty()),
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    assert_eq!(send(&app, get("/v1/identities")).await.json()["total"], 3);
    let after = snapshot(data);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "files were added or removed"
    );
    assert!(before == after, "a file changed");
}

/// Photos with more than one asks for: every face is answered; a form with two files is
/// answered from its `file` field.
#[tokio::test]
async fn many_faces_and_many_files() {
    let (_, sys) = shared();
    let app = app(sys);
    let r = send(
        &app,
        with_body(
            Method::POST,
            "/v1/match?k=1",
            Some("image/jpeg"),
            media("two_people.jpg"),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let faces = r.json()["faces"].as_array().unwrap().clone();
    assert_eq!(faces.len(), 2, "one answer per face");
    assert!(faces
        .iter()
        .all(|f| f["matches"].as_array().unwrap().len() == 1));

    // Two parts: first a text note named "note", then the photo as "file", then another "file".
    let boundary = "----twin-two-parts";
    let mut body = Vec::new();
    let part = |body: &mut Vec<u8>, name: &str, kind: &str, bytes: &[u8]| {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"x\"\r\nContent-Type: {kind}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    };
    part(&mut body, "note", "text/plain", b"hello");
    part(&mut body, "file", "image/jpeg", &media("obama.jpg"));
    part(&mut body, "file", "text/plain", b"not read");
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let r = send(
        &app,
        with_body(
            Method::POST,
            "/v1/match?k=1",
            Some(&format!("multipart/form-data; boundary={boundary}")),
            body,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.json()["faces"][0]["matches"][0]["slug"], "barack_obama");
}

/// A keyless server (`--allow-writes-without-key`) takes writes only as this machine's own page
/// and tools send them; a server on loopback answers only to loopback names.
#[tokio::test]
async fn a_keyless_server_takes_writes_only_from_this_machine() {
    let (_, sys) = shared();
    let mut config = http_config(sys);
    config.allow_writes_without_key = true;
    config.loopback_hosts_only = true;
    let open = router(Api::local(sys), config);
    // A promotion of a model that does not exist: 404 once the request is let through.
    let promote = |content_type: Option<&str>| {
        with_body(Method::POST, "/v1/models/999/promote", content_type, "")
    };
    let erase = || {
        with_body(
            Method::DELETE,
            "/v1/identities/nobody_here",
            None,
            Body::empty(),
        )
    };
    // Let through.
    send(&open, from_here(promote(Some("application/json"))))
        .await
        .error(404, "not_found");
    send(&open, from_here(erase()))
        .await
        .error(404, "not_found");
    let mut same_origin = from_here(erase());
    same_origin
        .headers_mut()
        .insert(header::ORIGIN, "http://localhost:8080".parse().unwrap());
    send(&open, same_origin).await.error(404, "not_found");

    // Refused, each for its reason, before anything is done.
    let mut refusals: Vec<(&str, Request<Body>)> = Vec::new();
    let mut r = from_here(erase());
    r.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 7], 40_000))));
    refusals.push(("another machine", r));
    let mut r = erase();
    r.headers_mut()
        .insert(header::HOST, "localhost:8080".parse().unwrap());
    refusals.push(("where the request came from", r));
    let mut r = from_here(erase());
    r.headers_mut()
        .insert(header::HOST, "evil.example:8080".parse().unwrap());
    refusals.push(("answers only to localhost", r));
    let mut r = from_here(erase());
    r.headers_mut()
        .insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    refusals.push(("another site's page", r));
    let mut r = from_here(erase());
    r.headers_mut()
        .insert(header::ORIGIN, "null".parse().unwrap());
    refusals.push(("another site's page", r));
    let mut r = from_here(erase());
    r.headers_mut()
        .insert(header::ORIGIN, "http://localhost:9999".parse().unwrap());
    refusals.push(("another site's page", r));
    let mut r = from_here(erase());
    r.headers_mut()
        .insert("sec-fetch-site", "cross-site".parse().unwrap());
    refusals.push(("the browser says", r));
    refusals.push(("Content-Type: application/json", from_here(promote(None))));
    refusals.push((
        "Content-Type: application/json",
        from_here(promote(Some("application/x-www-form-urlencoded"))),
    ));
    refusals.push((
        "Content-Type: application/json",
        from_here(with_body(
            Method::POST,
            "/v1/enrollments",
            Some("text/plain"),
            r#"{"name":"Ada"}"#,
        )),
    ));
    for (why, req) in refusals {
        let what = format!("{} {:?}", req.method(), req.headers());
        let m = send(&open, req).await.error(403, "forbidden");
        assert!(m.contains(why), "{what}: {m}");
    }
    // DNS rebinding: a page whose name now points at 127.0.0.1 reads nothing either.
    let mut r = from_here(get("/v1/identities"));
    r.headers_mut()
        .insert(header::HOST, "rebound.evil.example".parse().unwrap());
    send(&open, r).await.error(403, "forbidden");
    for host in ["localhost", "127.0.0.1:8080", "[::1]:8080", "app.localhost"] {
        let mut r = get("/v1/identities");
        r.headers_mut().insert(header::HOST, host.parse().unwrap());
        assert_eq!(send(&open, r).await.status, 200, "{host}");
    }
    // With a key, the key decides (no peer or origin rule: a browser elsewhere cannot send it).
    let keyed_app = app(sys);
    let mut r = keyed(erase(), KEY);
    r.headers_mut()
        .insert(header::ORIGIN, "https://elsewhere.example".parse().unwrap());
    send(&keyed_app, r).await.error(404, "not_found");
}

/// Waits for an enrollment to reach `indexed` (or fails on `failed`).
async fn until_indexed(app: &Router, status_url: &str) -> Value {
    let v = until_settled(app, status_url).await;
    assert_eq!(v["state"], "indexed", "enrollment failed: {v}");
    v
}

/// Waits for an enrollment to leave `created`/`uploaded`/`cropped`; returns its status.
async fn until_settled(app: &Router, status_url: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = send(app, get(status_url)).await;
        assert_eq!(s.status, 200);
        let v = s.json();
        if matches!(v["state"].as_str(), Some("indexed" | "failed")) {
            return v;
        }
        assert!(Instant::now() < deadline, "not settled after 120 s: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Enroll with a photo, be matched as oneself, refusals on the way, erase, be gone.
#[tokio::test]
async fn enroll_match_erase() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Local::open(config(dir.path())).unwrap();
    let app = app(&sys);

    // Start an enrollment.
    let r = send(
        &app,
        keyed(
            with_body(
                Method::POST,
                "/v1/enrollments",
                Some("application/json"),
                r#"{"name":"  Barack Obama "}"#,
            ),
            KEY,
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let created = r.json();
    assert_eq!(created["display_name"], "Barack Obama");
    assert_eq!(created["slug"], "barack_obama");
    assert_eq!(created["upload_method"], "PUT");
    let id = created["upload_id"].as_str().unwrap().to_string();
    let status_url = created["status_url"].as_str().unwrap().to_string();
    assert_eq!(r.headers[header::LOCATION], status_url.as_str());
    let upload_url = created["upload_url"].as_str().unwrap().to_string();
    assert_eq!(
        upload_url,
        format!("/v1/uploads/{id}"),
        "no Host header: a path"
    );
    let s = send(&app, get(&status_url)).await.json();
    assert_eq!(s["state"], "created");
    assert!(s.get("source_key").is_none(), "storage keys stay inside");

    // Refused uploads leave it waiting for its video.
    send(
        &app,
        keyed(
            with_body(Method::PUT, &upload_url, Some("text/plain"), "hi"),
            KEY,
        ),
    )
    .await
    .error(415, "unsupported_media_type");
    send(
        &app,
        keyed(with_body(Method::PUT, &upload_url, None, "hi"), KEY),
    )
    .await
    .error(415, "unsupported_media_type");
    send(
        &app,
        with_body(Method::PUT, &upload_url, Some("video/mp4"), "hi"),
    )
    .await
    .error(401, "unauthorized");
    let mut declared = keyed(
        with_body(Method::PUT, &upload_url, Some("video/mp4"), Body::empty()),
        KEY,
    );
    declared
        .headers_mut()
        .insert(header::CONTENT_LENGTH, (50u64 * 1024 * 1024 + 1).into());
    let m = send(&app, declared).await.error(413, "too_large");
    assert!(m.contains("50 MB"), "{m}");
    let huge = vec![0u8; 50 * 1024 * 1024 + 1];
    send(
        &app,
        keyed(
            with_body(Method::PUT, &upload_url, Some("video/mp4"), huge),
            KEY,
        ),
    )
    .await
    .error(413, "too_large");
    send(
        &app,
        keyed(
            with_body(
                Method::PUT,
                &upload_url,
                Some("image/jpeg"),
                vec![0u8; 10 * 1024 * 1024 + 1],
            ),
            KEY,
        ),
    )
    .await
    .error(413, "too_large");
    send(
        &app,
        keyed(
            with_body(Method::PUT, &upload_url, Some("video/mp4"), Body::empty()),
            KEY,
        ),
    )
    .await
    .error(400, "bad_request");
    assert_eq!(
        send(&app, get(&status_url)).await.json()["state"],
        "created"
    );
    assert!(
        !dir.path().join("uploads").exists()
            || snapshot(&dir.path().join("uploads"))
                .values()
                .all(Option::is_none)
    );

    // The photo, with the key as a bearer token.
    let mut put = with_body(
        Method::PUT,
        &upload_url,
        Some("image/jpeg"),
        media("obama2.jpg"),
    );
    put.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {KEY}").parse().unwrap(),
    );
    let r = send(&app, put).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.json()["upload_id"], id.as_str());
    let done = until_indexed(&app, &status_url).await;
    assert_eq!(done["kept"], 1);
    let crop_url = done["crop_urls"][0].as_str().unwrap().to_string();
    assert!(
        crop_url.starts_with(&format!("/v1/crops/barack_obama/{id}/")),
        "{crop_url}"
    );
    assert_eq!(send(&app, get(&crop_url)).await.status, 200);

    // A second upload to the same id is refused.
    send(
        &app,
        keyed(
            with_body(
                Method::PUT,
                &upload_url,
                Some("image/jpeg"),
                media("obama2.jpg"),
            ),
            KEY,
        ),
    )
    .await
    .error(409, "conflict");

    // Another photo of him: this is him.
    let r = send(
        &app,
        with_body(
            Method::POST,
            "/v1/match",
            Some("image/jpeg"),
            media("obama.jpg"),
        ),
    )
    .await;
    let hit = &r.json()["faces"][0]["matches"][0];
    assert_eq!(
        (hit["slug"].as_str(), hit["same_person"].as_bool()),
        (Some("barack_obama"), Some(true)),
        "{hit}"
    );
    assert_eq!(
        send(&app, get("/v1/identities/barack_obama")).await.status,
        200
    );

    // A name that folds into his slug is a new person, shown as typed; adding to him is asked
    // for by his slug and keeps his name.
    let enroll = |body: String| {
        keyed(
            with_body(
                Method::POST,
                "/v1/enrollments",
                Some("application/json"),
                body,
            ),
            KEY,
        )
    };
    let other = send(&app, enroll(r#"{"name":"barack-OBAMA!"}"#.into()))
        .await
        .json();
    assert_eq!(
        (other["slug"].as_str(), other["display_name"].as_str()),
        (Some("barack_obama_2"), Some("barack-OBAMA!")),
        "{other}"
    );
    let again = send(
        &app,
        enroll(r#"{"name":"Barry","join":"barack_obama"}"#.into()),
    )
    .await
    .json();
    assert_eq!(
        (again["slug"].as_str(), again["display_name"].as_str()),
        (Some("barack_obama"), Some("Barack Obama")),
        "{again}"
    );
    send(&app, enroll(r#"{"name":"Ada","join":"nobody"}"#.into()))
        .await
        .error(404, "not_found");
    // Names in other scripts are kept as typed, with slugs of their own; text that changes
    // direction is refused.
    for name in ["Анна Каренина", "李小龙", "محمد صلاح", "Αλέξανδρος"]
    {
        let r = send(
            &app,
            enroll(serde_json::json!({ "name": name }).to_string()),
        )
        .await;
        assert_eq!(r.status, 201, "{name}: {:?}", r.body);
        let created = r.json();
        assert_eq!(created["display_name"], name);
        let slug = created["slug"].as_str().unwrap();
        assert!(slug.starts_with("id_"), "{name}: {slug}");
        let status = send(&app, get(created["status_url"].as_str().unwrap()))
            .await
            .json();
        assert_eq!(status["display_name"], name);
    }
    let m = send(
        &app,
        enroll(serde_json::json!({ "name": "Ada\u{202E}evil" }).to_string()),
    )
    .await
    .error(400, "bad_request");
    assert!(m.contains("direction"), "{m}");

    // Erase him: not without the key, then gone everywhere.
    send(
        &app,
        with_body(
            Method::DELETE,
            "/v1/identities/barack_obama",
            None,
            Body::empty(),
        ),
    )
    .await
    .error(401, "unauthorized");
    assert_eq!(
        send(&app, get("/v1/identities/barack_obama")).await.status,
        200
    );
    let r = send(
        &app,
        keyed(
            with_body(
                Method::DELETE,
                "/v1/identities/barack_obama",
                None,
                Body::empty(),
            ),
            KEY,
        ),
    )
    .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    send(&app, get("/v1/identities/barack_obama"))
        .await
        .error(404, "not_found");
    send(&app, get(&crop_url)).await.error(404, "not_found");
    send(
        &app,
        keyed(
            with_body(
                Method::DELETE,
                "/v1/identities/barack_obama",
                None,
                Body::empty(),
            ),
            KEY,
        ),
    )
    .await
    .error(404, "not_found");
    assert_eq!(send(&app, get("/v1/identities")).await.json()["total"], 0);
    let r = send(
        &app,
        with_body(
            Method::POST,
            "/v1/match",
            Some("image/jpeg"),
            media("obama.jpg"),
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["faces"][0]["matches"],
        serde_json::json!([]),
        "nobody left to match"
    );

    // With a Host header, the upload URL is absolute.
    let mut req = keyed(
        with_body(
            Method::POST,
            "/v1/enrollments",
            Some("application/json"),
            r#"{"name":"Ada"}"#,
        ),
        KEY,
    );
    req.headers_mut()
        .insert(header::HOST, "twin.example:8080".parse().unwrap());
    let created = send(&app, req).await.json();
    assert!(created["upload_url"]
        .as_str()
        .unwrap()
        .starts_with("http://twin.example:8080/v1/uploads/"));
}

/// Requests that are taken as they are (unknown fields ignored, hostile names kept as text), and
/// uploads that are accepted but cannot be used: the enrollment ends `failed` with the reason.
#[tokio::test]
async fn odd_enrollments_are_taken_as_text_and_unusable_uploads_fail_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let sys = Local::open(config(dir.path())).unwrap();
    let app = app(&sys);

    // Unknown fields are ignored, even one nested 100 000 deep (skipped without recursion).
    let r = send(
        &app,
        enroll_json(r#"{"name":"Ada","admin":true,"slug":"root","v":99}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.json()["slug"], "ada");
    let deep = format!(
        r#"{{"x":{}1{},"name":"Ada Deep"}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let r = send(&app, enroll_json(deep)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.json()["slug"], "ada_deep");
    // Names that look like paths or markup are names: shown as typed, stored under a slug.
    for (name, slug) in [
        ("../../etc/passwd", "etc_passwd"),
        ("<script>alert(1)</script>", "script_alert_1_script"),
        ("Robert'); DROP TABLE people;--", "robert_drop_table_people"),
    ] {
        let r = send(
            &app,
            enroll_json(serde_json::json!({ "name": name }).to_string()),
        )
        .await;
        assert_eq!(r.status, 201, "{name}: {:?}", r.body);
        let v = r.json();
        assert_eq!(
            (v["display_name"].as_str(), v["slug"].as_str()),
            (Some(name), Some(slug)),
            "{v}"
        );
    }

    // Uploads the server takes (type and size are fine) whose bytes cannot be used.
    let faceless = faceless_png();
    let uploads: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "a photo sent as a video",
            "video/mp4",
            media("obama.jpg"),
            "not an MP4, MOV or WebM video (it looks like a JPEG image)",
        ),
        (
            "text sent as a photo",
            "image/jpeg",
            b"hello, this is no photo".to_vec(),
            "not a JPEG, PNG or WebP image",
        ),
        (
            "a photo without a face",
            "image/png",
            faceless,
            "no face was found in the photo",
        ),
    ];
    for (what, content_type, bytes, reason) in uploads {
        let created = send(&app, enroll_json(r#"{"name":"Grace Hopper"}"#))
            .await
            .json();
        let url = created["upload_url"].as_str().unwrap();
        let r = send(
            &app,
            keyed(with_body(Method::PUT, url, Some(content_type), bytes), KEY),
        )
        .await;
        assert_eq!(r.status, 202, "{what}: {:?}", r.body);
        let done = until_settled(&app, created["status_url"].as_str().unwrap()).await;
        assert_eq!(done["state"], "failed", "{what}: {done}");
        let error = done["error"].as_str().unwrap();
        assert!(error.contains(reason), "{what}: {error}");
    }
    // Nobody came into the gallery.
    assert_eq!(send(&app, get("/v1/identities")).await.json()["total"], 0);
}
