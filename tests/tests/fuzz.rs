//! Fuzz targets for the parsers of untrusted bytes, run for a bounded number of executions in
//! the test suite (see `twin_tests::fuzz`): photo decoding, the S3 event parser, SQS messages,
//! the HTTP API's JSON and multipart bodies, storage keys and names, dlib's model files, and the
//! parquet datasets `twin gallery import` reads.
//! Each prints how many inputs it ran. A crash saves its input and fails the test.

use twin_core::messages::{IngestMessage, TrainRequest};
use twin_core::{keys, names, store};
use twin_tests::fuzz;

/// Executions per target besides its corpus (a few seconds each on this machine).
const EXECUTIONS: usize = 20_000;

#[test]
fn fuzz_photo_decoding() {
    let limits = twin_faces::imageio::Limits {
        max_bytes: 1 << 20,
        max_side: 2_000,
        max_pixels: 1_000_000,
    };
    let words: &[&[u8]] = &[
        b"\xff\xd8\xff\xe0",
        b"\xff\xd9",
        b"IDAT",
        b"IHDR",
        b"IEND",
        b"RIFF",
        b"WEBPVP8 ",
        b"Exif\0\0",
    ];
    let r = fuzz::run("photo", Vec::new(), words, EXECUTIONS, 1 << 16, |b| {
        if let Ok(img) = twin_faces::imageio::decode(b, &limits) {
            assert!(img.width() as u64 * img.height() as u64 <= limits.max_pixels);
            let (small, scale) = twin_faces::imageio::fit_pixels(img, 1_000);
            assert!(small.width() as u64 * small.height() as u64 <= 1_000 && scale <= 1.0);
        }
    });
    println!("photo decoding: {r:?}");
}

#[test]
fn fuzz_s3_events() {
    let words: &[&[u8]] = &[
        b"\"Records\"",
        b"\"s3\"",
        b"\"object\"",
        b"\"key\"",
        b"%2F",
        b"%",
        b"+",
        b"\"size\":",
        b"null",
        b"[]",
        b"{}",
    ];
    let r = fuzz::run("s3_event", Vec::new(), words, EXECUTIONS, 1 << 14, |b| {
        let text = String::from_utf8_lossy(b);
        if let Ok(refs) = twin_aws::s3_event::parse_str(&text) {
            for o in refs {
                // A key that parses is one the store accepts, or is refused clearly.
                let _ = store::check_key(&o.key);
                let _ = keys::parse_upload_key(&o.key);
            }
        }
    });
    println!("S3 events: {r:?}");
}

#[test]
fn fuzz_queue_messages() {
    let words: &[&[u8]] = &[
        b"\"v\":1",
        b"\"crops\":",
        b"\"slug\":",
        b"\"upload_id\":",
        b"\"dataset_version\":",
        b"crops/",
        b"\\u0000",
        b"null",
        b"-1",
        b"1e400",
    ];
    let r = fuzz::run("sqs_message", Vec::new(), words, EXECUTIONS, 1 << 14, |b| {
        let text = String::from_utf8_lossy(b);
        if let Ok(m) = IngestMessage::parse(&text) {
            // A message that parses names only keys the store accepts, and round-trips.
            names::check_slug(&m.slug).expect("a parsed message has a valid slug");
            for c in &m.crops {
                store::check_key(c).expect("a parsed message has valid crop keys");
            }
            assert_eq!(IngestMessage::parse(&m.to_json()).ok(), Some(m));
        }
        let _ = TrainRequest::parse(&text);
    });
    println!("queue messages: {r:?}");
}

#[test]
fn fuzz_keys_and_names() {
    let words: &[&[u8]] = &[
        "\u{202e}".as_bytes(),
        "\u{2067}".as_bytes(),
        b"..",
        b"//",
        b"/",
        b"\0",
        "Ä".as_bytes(),
        "李".as_bytes(),
        b"_",
        b"-",
        b" ",
    ];
    let r = fuzz::run("keys_names", Vec::new(), words, EXECUTIONS * 3, 512, |b| {
        let s = String::from_utf8_lossy(b);
        if let Ok(name) = names::display_name(&s) {
            let slug = names::slugify(&name);
            names::check_slug(&slug)
                .unwrap_or_else(|e| panic!("{name:?} gave the slug {slug:?}: {e}"));
            assert_eq!(names::display_name(&name).as_deref(), Ok(name.as_str()));
        }
        if let Ok(person) = names::person_from_folder(&s) {
            names::check_slug(&names::slugify(&person)).expect("a folder's person has a slug");
        }
        if store::check_key(&s).is_ok() {
            assert!(!s
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == ".."));
        }
        let _ = keys::crop_owner(&s);
        let _ = keys::parse_upload_key(&s);
        let _ = keys::check_upload_id(&s);
        let _ = twin_aws::s3_event::decode_key(&s);
    });
    println!("keys and names: {r:?}");
}

#[test]
fn fuzz_dlib_model_files() {
    let models = twin_tests::models_dir();
    let mmod = std::fs::read(models.join("mmod_human_face_detector.dat"))
        .expect("the detector file (scripts/setup installs it)");
    let words: &[&[u8]] = &[
        b"loss_mmod_",
        b"con_",
        b"relu_",
        b"affine_",
        b"input_rgb_image_pyramid",
    ];
    // Mutations of the real file, at most its first 64 KB (the layers' descriptions; past them
    // are weights), and of the seeds in the repository.
    let head = mmod[..mmod.len().min(64 * 1024)].to_vec();
    let r = fuzz::run(
        "dlib",
        vec![mmod.clone(), head],
        words,
        4_000,
        mmod.len(),
        |b| {
            let _ = twin_model::dlib::mmod::parse(b);
            let _ = twin_model::dlib::resnet::parse(b);
            let _ = twin_faces::landmarks::ShapePredictor::from_bytes(b);
        },
    );
    println!("dlib model files: {r:?}");
}

#[test]
fn fuzz_http_bodies() {
    use axum::body::Body;
    use axum::http::{Method, Request};
    use tower::ServiceExt;
    let work = tempfile::tempdir().unwrap();
    let local = twin_app::local::Local::open_inline(&twin_app::local::LocalConfig::new(
        work.path().join("data"),
        twin_tests::models_dir(),
        1,
    ))
    .expect("open a data folder");
    let mut config = twin_http::HttpConfig::new(twin_http::Uploads::Here(local.clone()));
    config.api_key = Some("fuzz".into());
    let app = twin_http::router(twin_http::Api::local(&local), config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let send = |method: Method, uri: &str, content_type: &str, body: Vec<u8>| {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", content_type)
            .header("x-api-key", "fuzz")
            .body(Body::from(body))
            .unwrap();
        let status = rt.block_on(app.clone().oneshot(req)).unwrap().status();
        // Bad input is the caller's fault: never a 500.
        assert!(status.as_u16() < 500, "{status} for a {content_type} body");
    };
    let words: &[&[u8]] = &[
        b"\"name\":",
        b"\"join\":",
        b"\"size\":",
        b"\"content_type\":",
        b"--twin-fuzz",
        b"\r\n\r\n",
        b"Content-Disposition: form-data; name=\"file\"",
        b"\\ud800",
    ];
    let r = fuzz::run(
        "http_json",
        Vec::new(),
        words,
        EXECUTIONS / 3,
        1 << 12,
        |b| {
            send(
                Method::POST,
                "/v1/enrollments",
                "application/json",
                b.to_vec(),
            );
        },
    );
    println!("JSON bodies: {r:?}");
    let r = fuzz::run(
        "http_multipart",
        Vec::new(),
        words,
        EXECUTIONS / 3,
        1 << 14,
        |b| {
            send(
                Method::POST,
                "/v1/match",
                "multipart/form-data; boundary=twin-fuzz",
                b.to_vec(),
            );
        },
    );
    println!("multipart bodies: {r:?}");
}

#[test]
fn fuzz_parquet_datasets() {
    // Besides the corpus (the same files, and a crash it found: the parquet reader panicked on a
    // damaged page), a small dataset as the `datasets` library writes it, with and without its
    // class names, in one and in three row groups, written by this build.
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<(Vec<u8>, i64)> = (0..6)
        .map(|i| (vec![0xff, 0xd8, 0xff, i as u8, 0xff, 0xd9], i % 3))
        .collect();
    let mut seeds = Vec::new();
    for (i, (names, per_group)) in [(&["a", "b", "c"][..], 6), (&[][..], 2)].iter().enumerate() {
        let path = dir.path().join(format!("seed{i}.parquet"));
        twin_tests::parquet::write_hf_parquet(&path, &rows, names, *per_group);
        seeds.push(std::fs::read(&path).unwrap());
    }
    let words: &[&[u8]] = &[b"PAR1", b"huggingface", b"ClassLabel", b"image", b"label"];
    // The reader takes a file, as the import does.
    let file = dir.path().join("input.parquet");
    let r = fuzz::run("parquet", seeds, words, 4_000, 1 << 14, |b| {
        std::fs::write(&file, b).unwrap();
        let Ok(d) = twin_app::hfparquet::HfDataset::open(&file) else {
            return;
        };
        let _ = (d.class_names(), d.num_rows());
        for g in 0..d.num_row_groups() {
            let _ = d.row_group(g);
        }
    });
    println!("parquet datasets: {r:?}");
}
