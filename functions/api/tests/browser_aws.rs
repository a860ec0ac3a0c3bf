//! The web page in a real browser against the `api` function as Lambda serves it: the real
//! `api` binary (the one cargo builds with this test) under a local Lambda Runtime API, behind a
//! local API Gateway HTTP API (payload 2.0, only the template's routes), over S3 and SQS on moto
//! with `infra/template.yaml` deployed: its IAM roles enforced and the bucket's CORS rules naming
//! the gateway's origin ([`twin_tests::deploy`], [`twin_tests::lambda`]).
//!
//! What AWS itself does is done as AWS does it: the bucket notifies the ingest function of
//! every object created under the template's prefix (moto delivers the notifications into a
//! queue; a thread here hands each one to [`IngestFn::handle`] under the IngestFunction role, as
//! S3 invokes the function), and a second thread is the SQS event source of the dataset
//! function (batches of the template's size and window from the IngestQueue, handed to
//! [`DatasetFn::handle`] under the DatasetFunction role, the messages not in
//! `batchItemFailures` deleted). The gallery is seeded the way an operator fills it: photos of
//! two people dropped in `uploads/<Person>/`.
//!
//! Then `tests/browser/twin_page_aws.mjs` drives the page in headless Chromium: a match of a
//! seeded person, an enrollment of "Ada Lovelace" with `short_hamilton_clip.mp4` (the API key
//! typed into the page's dialog; the video PUT straight to the bucket with the presigned URL,
//! through the bucket's CORS rules), the status followed to `indexed`, a match of the clip's
//! person showing the enrolled name, and the erasure from the gallery view. The script checks
//! that only the presigned PUT left the API's origin and that the API key never did.
//!
//! The test fails on any call a role refused (the in-process functions' calls, recorded), any
//! 403 or 5xx in moto's log (which also has the api binary's and the browser's requests), any
//! `ERROR` the api logged, any answer the gateway had to make itself (no route, a failed or
//! timed-out invocation), any event the functions failed on, and anything of the erased person
//! left under `uploads/` or `crops/`. It prints the gateway's access log, the S3 requests the
//! api made (moto's log minus the in-process functions' recorded calls) and each function's
//! calls. Screenshots go to `target/browser-screenshots-aws/`.
//!
//! Parameters a deployer would set for the page: `WriteRoutesAuthorization=NONE` (the page
//! cannot sign requests), and, to keep the test short, `ModelPollSeconds=5` (the template's
//! minimum) and `DatasetBatchingWindowSeconds=2`. Nothing is skipped: a missing Node.js,
//! Chromium, playwright-core, venv or model is a failure that names `scripts/setup`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use serde_json::Value;
use twin_aws::Aws;
use twin_fn_dataset::DatasetFn;
use twin_fn_ingest::IngestFn;
use twin_tests::deploy::{Deployment, ACCOUNT};
use twin_tests::events::sqs_event;
use twin_tests::lambda::{function_arn, lambda_command, template_routes, HttpApi, LambdaFunction};
use twin_tests::moto::REGION;
use twin_tests::{data_dir, repo_root, require_backbone, SETUP_HINT};

/// Template parameters other than their defaults (see the module's documentation).
const PARAMS: [(&str, &str); 3] = [
    ("WriteRoutesAuthorization", "NONE"),
    ("ModelPollSeconds", "5"),
    ("DatasetBatchingWindowSeconds", "2"),
];
/// The gallery seeded through `uploads/<Person>/`: people of `data/faces`, photos each.
const SEED: [&str; 2] = ["Barack_Obama", "Madonna"];
const SEED_PHOTOS: usize = 4;
/// A photo of `SEED[0]` under `data/media`.
const SEED_MATCH: &str = "obama.jpg";
/// The queue moto delivers the bucket's notifications into (S3 invokes ingest directly in AWS).
const NOTIFICATION_QUEUE: &str = "twin-s3-notifications";
/// A path the api's router serves (local uploads) that the template does not route.
const NOT_ROUTED: &str = "/v1/uploads/0123456789abcdef0123456789abcdef";
/// How long the api may take to start (models, dataset, debug build).
const READY_LIMIT: Duration = Duration::from_secs(120);
/// How long the seeded gallery may take to be ingested and committed.
const SEED_LIMIT: Duration = Duration::from_secs(120);
/// How long the browser script may run.
const BROWSER_LIMIT: Duration = Duration::from_secs(240);

fn models_dir() -> PathBuf {
    require_backbone()
        .parent()
        .expect("the backbone is in the models folder")
        .to_path_buf()
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .filter(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("Chromium is not installed (/usr/lib/chromium/chromium, /usr/bin/chromium, or $CHROMIUM); {SETUP_HINT}")
        })
}

/// What the event threads did and what went wrong.
#[derive(Default)]
struct EventLog {
    lines: Mutex<Vec<String>>,
    failures: Mutex<Vec<String>>,
}

impl EventLog {
    fn note(&self, line: String) {
        println!("[events] {line}");
        self.lines.lock().unwrap().push(line);
    }

    fn fail(&self, line: String) {
        println!("[events] FAILED: {line}");
        self.failures.lock().unwrap().push(line);
    }
}

/// Receives up to `max` messages (long poll of `wait` seconds), with their system attributes.
fn receive(admin: &Aws, url: &str, max: i32, wait: i32) -> Vec<Message> {
    let sqs = admin.sqs().clone();
    let u = url.to_string();
    admin
        .block_on(async move {
            sqs.receive_message()
                .queue_url(&u)
                .max_number_of_messages(max)
                .wait_time_seconds(wait)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
        })
        .map(|r| r.messages().to_vec())
        .unwrap_or_else(|e| panic!("receive from {url}: {e:?}"))
}

fn delete(admin: &Aws, url: &str, message: &Message) {
    let sqs = admin.sqs().clone();
    let (u, handle) = (
        url.to_string(),
        message.receipt_handle().unwrap_or_default().to_string(),
    );
    admin
        .block_on(async move {
            sqs.delete_message()
                .queue_url(&u)
                .receipt_handle(&handle)
                .send()
                .await
        })
        .unwrap_or_else(|e| panic!("delete from {url}: {e:?}"));
}

/// The bucket's notifications for the ingest function, delivered into a queue of their own:
/// returns that queue's URL.
fn notify_ingest(deployment: &Deployment) -> String {
    let admin = deployment.admin();
    let notifications: Vec<Value> = deployment.spec()["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n["function"] == "IngestFunction")
        .collect();
    assert!(
        !notifications.is_empty(),
        "the template's bucket does not notify the ingest function: {}",
        deployment.spec()["notifications"]
    );
    let sqs = admin.sqs().clone();
    let url = admin
        .block_on(async move {
            sqs.create_queue()
                .queue_name(NOTIFICATION_QUEUE)
                .send()
                .await
        })
        .expect("create the notification queue")
        .queue_url()
        .unwrap_or_default()
        .to_string();
    let arn = format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{NOTIFICATION_QUEUE}");
    let mut config = NotificationConfiguration::builder();
    for (i, n) in notifications.iter().enumerate() {
        let mut rules = Vec::new();
        for (name, field) in [
            (FilterRuleName::Prefix, "prefix"),
            (FilterRuleName::Suffix, "suffix"),
        ] {
            if let Some(v) = n[field].as_str().filter(|v| !v.is_empty()) {
                rules.push(FilterRule::builder().name(name).value(v).build());
            }
        }
        let queue = QueueConfiguration::builder()
            .id(format!("ingest-{i}"))
            .queue_arn(&arn)
            .events(Event::from(n["event"].as_str().expect("an event name")))
            .filter(
                NotificationConfigurationFilter::builder()
                    .key(S3KeyFilter::builder().set_filter_rules(Some(rules)).build())
                    .build(),
            )
            .build()
            .expect("a queue configuration");
        config = config.queue_configurations(queue);
    }
    let s3 = admin.s3().clone();
    let bucket = deployment.bucket();
    let config = config.build();
    admin
        .block_on(async move {
            s3.put_bucket_notification_configuration()
                .bucket(&bucket)
                .notification_configuration(config)
                .send()
                .await
        })
        .expect("the bucket's notifications");
    url
}

/// S3 invoking the ingest function: each notification moto delivered, handed to the function
/// (under its role) as S3 hands it over; moto's `s3:TestEvent` is not a notification of an
/// object and is dropped.
fn s3_invoker(
    admin: Aws,
    url: String,
    ingest: IngestFn,
    stop: Arc<AtomicBool>,
    log: Arc<EventLog>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    while !stop.load(Ordering::SeqCst) {
        for m in receive(&admin, &url, 10, 1) {
            let body: Value = serde_json::from_str(m.body().unwrap_or_default())
                .unwrap_or_else(|e| panic!("a notification that is not JSON ({e})"));
            if body["Event"] == "s3:TestEvent" {
                delete(&admin, &url, &m);
                continue;
            }
            let what: Vec<String> = body["Records"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    format!(
                        "{} {}",
                        r["eventName"].as_str().unwrap_or_default(),
                        r["s3"]["object"]["key"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            let started = Instant::now();
            match rt.block_on(ingest.handle(body)) {
                Ok(out) => log.note(format!(
                    "ingest {} in {:.1} s: {out}",
                    what.join(", "),
                    started.elapsed().as_secs_f64()
                )),
                Err(e) => log.fail(format!("ingest {}: {e}", what.join(", "))),
            }
            delete(&admin, &url, &m);
        }
    }
}

/// An SQS event source mapping of the template, read from the deployment.
struct EventSource {
    url: String,
    arn: String,
    batch_size: usize,
    window: Duration,
}

fn event_source(deployment: &Deployment, function: &str) -> EventSource {
    let source = deployment.spec()["event_sources"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["function"] == function)
        .unwrap_or_else(|| panic!("the template maps no queue to {function}"))
        .clone();
    assert_eq!(
        source["report_batch_item_failures"], true,
        "{function} reports batch item failures"
    );
    let queue = source["queue"].as_str().expect("a queue");
    EventSource {
        url: deployment.queue_url(queue),
        arn: deployment.spec()["queues"][queue]["arn"]
            .as_str()
            .expect("the queue's ARN")
            .to_string(),
        batch_size: source["batch_size"].as_u64().expect("a batch size") as usize,
        window: Duration::from_secs(source["maximum_batching_window"].as_u64().unwrap_or(0)),
    }
}

/// Lambda's SQS poller for the dataset function: a batch of up to the mapping's size,
/// gathered for at most its batching window, handed over as one SQS event; the messages the
/// function did not report failed are deleted.
fn sqs_poller(
    admin: Aws,
    source: EventSource,
    dataset: DatasetFn,
    stop: Arc<AtomicBool>,
    log: Arc<EventLog>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    while !stop.load(Ordering::SeqCst) {
        let mut batch: Vec<Message> = Vec::new();
        let mut first = None;
        loop {
            let want = (source.batch_size - batch.len()).min(10) as i32;
            let got = receive(&admin, &source.url, want, 1);
            if !got.is_empty() {
                first.get_or_insert_with(Instant::now);
            }
            batch.extend(got);
            match first {
                None if stop.load(Ordering::SeqCst) => return,
                None => continue,
                Some(at) if batch.len() >= source.batch_size || at.elapsed() >= source.window => {
                    break
                }
                Some(_) => {}
            }
        }
        let event: SqsEvent = serde_json::from_value(sqs_event(&batch, &source.arn))
            .expect("an SQS event the runtime reads");
        let started = Instant::now();
        match rt.block_on(dataset.handle(event)) {
            Ok(response) => {
                let failed: Vec<String> = response
                    .batch_item_failures
                    .into_iter()
                    .map(|f| f.item_identifier)
                    .collect();
                for m in &batch {
                    if !failed.iter().any(|f| Some(f.as_str()) == m.message_id()) {
                        delete(&admin, &source.url, m);
                    }
                }
                if failed.is_empty() {
                    log.note(format!(
                        "dataset: batch of {} in {:.1} s",
                        batch.len(),
                        started.elapsed().as_secs_f64()
                    ));
                } else {
                    log.fail(format!(
                        "dataset: {} of {} messages failed",
                        failed.len(),
                        batch.len()
                    ));
                }
            }
            Err(e) => log.fail(format!("dataset: the batch of {} failed: {e}", batch.len())),
        }
    }
}

/// Puts the seed photos in `uploads/<Person>/` as an operator would.
fn seed_gallery(admin: &Aws, bucket: &str) {
    for person in SEED {
        let dir = data_dir().join("faces").join(person);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        files.sort();
        for path in files.into_iter().take(SEED_PHOTOS) {
            let key = format!(
                "uploads/{person}/{}",
                path.file_name().unwrap().to_string_lossy()
            );
            let body = std::fs::read(&path).expect("a seed photo");
            let s3 = admin.s3().clone();
            let b = bucket.to_string();
            admin
                .block_on(async move {
                    s3.put_object()
                        .bucket(&b)
                        .key(&key)
                        .content_type("image/jpeg")
                        .body(ByteStream::from(body))
                        .send()
                        .await
                })
                .expect("put a seed photo");
        }
    }
}

/// Every key under `prefix`.
fn keys_under(admin: &Aws, bucket: &str, prefix: &str) -> Vec<String> {
    let s3 = admin.s3().clone();
    let (b, p) = (bucket.to_string(), prefix.to_string());
    admin.block_on(async move {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = s3
                .list_objects_v2()
                .bucket(&b)
                .prefix(&p)
                .set_continuation_token(token)
                .send()
                .await
                .expect("list the bucket");
            out.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() {
                return out;
            }
        }
    })
}

/// One request in moto's access log: method, target, status.
struct MotoLine {
    method: String,
    target: String,
    status: u16,
    line: String,
}

/// Text without ANSI colour sequences (werkzeug colours its access lines by status).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// werkzeug's access lines: `127.0.0.1 - - [date] "GET /path HTTP/1.1" 200 -`.
fn moto_lines(log: &str) -> Vec<MotoLine> {
    strip_ansi(log)
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(" \"")?;
            let (request, rest) = rest.split_once("\" ")?;
            let mut parts = request.split(' ');
            let method = parts.next()?.to_string();
            let target = parts.next()?.to_string();
            let status = rest.split_whitespace().next()?.parse().ok()?;
            Some(MotoLine {
                method,
                target,
                status,
                line: line.to_string(),
            })
        })
        .collect()
}

/// An S3 request as `METHOD prefix/…` (the key's first folder; `(bucket)` for bucket calls).
fn s3_pattern(method: &str, key: &str, query: &str) -> String {
    let place = match key.split_once('/') {
        Some((first, "CURRENT")) => format!("{first}/CURRENT"),
        Some((first, _)) => format!("{first}/…"),
        None if key.is_empty() => {
            let what: Vec<&str> = query
                .split('&')
                .filter(|q| !q.is_empty())
                .map(|q| q.split('=').next().unwrap_or(q))
                .filter(|q| ["list-type", "prefix", "delete", "notification", "cors"].contains(q))
                .collect();
            format!("(bucket) ?{}", what.join("&"))
        }
        None => key.to_string(),
    };
    format!("{method} {place}")
}

fn operation_method(operation: &str) -> &'static str {
    match operation {
        "PutObject" | "CopyObject" | "PutBucketNotificationConfiguration" => "PUT",
        "HeadObject" | "HeadBucket" => "HEAD",
        "DeleteObject" => "DELETE",
        "DeleteObjects" | "CreateMultipartUpload" | "CompleteMultipartUpload" => "POST",
        _ => "GET",
    }
}

#[test]
fn page_enrolls_matches_erases_through_lambda_api_gateway_s3_and_sqs() {
    let started = Instant::now();
    let root = repo_root();
    let browser_dir = root.join("tests/browser");
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "Node.js is not installed (node --version failed); {SETUP_HINT}"
    );
    let chromium = chromium();
    assert!(
        browser_dir
            .join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is not installed in tests/browser/node_modules; {SETUP_HINT}"
    );
    let models = models_dir();
    let ort = root.join("vendor/onnxruntime/libonnxruntime.so");
    assert!(ort.is_file(), "{} is missing; {SETUP_HINT}", ort.display());
    let media = data_dir().join("media");
    let api_binary = Path::new(env!("CARGO_BIN_EXE_api"));
    let screenshots = api_binary
        .parent()
        .and_then(Path::parent)
        .expect("the binary is in target/<profile>/")
        .join("browser-screenshots-aws");
    let _ = std::fs::remove_dir_all(&screenshots);

    // The gateway's origin is known before the stack is deployed: the bucket's CORS rules name
    // it.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a loopback port");
    let origin = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("its address").port()
    );
    let deployment = Deployment::start(Some(&origin), &PARAMS);
    let admin = deployment.admin().clone();
    let bucket = deployment.bucket();
    let cors = &deployment.spec()["bucket"]["cors"];
    assert!(
        cors.to_string().contains(&origin),
        "the bucket's CORS rules name the API's origin: {cors}"
    );
    println!(
        "deployed on moto {} in {:.1} s; bucket CORS {cors}",
        deployment.moto().endpoint(),
        started.elapsed().as_secs_f64()
    );

    // S3 → ingest and SQS → dataset, as AWS delivers events.
    let notifications = notify_ingest(&deployment);
    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(EventLog::default());
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    {
        let ingest = IngestFn::new(&deployment.aws_for("IngestFunction"), &models, 1)
            .expect("the ingest function starts");
        let (admin, stop, events) = (admin.clone(), stop.clone(), events.clone());
        threads.push(std::thread::spawn(move || {
            s3_invoker(admin, notifications, ingest, stop, events)
        }));
    }
    {
        let min_new = deployment.env_value("DatasetFunction", "TWIN_TRAIN_MIN_NEW");
        let dataset = DatasetFn::new(
            &deployment.aws_for("DatasetFunction"),
            &models.join(twin_core::paths::BACKBONE_FILE),
            1,
            min_new,
        )
        .expect("the dataset function starts");
        let source = event_source(&deployment, "DatasetFunction");
        println!(
            "dataset event source: batches of {} within {:?}",
            source.batch_size, source.window
        );
        let (admin, stop, events) = (admin.clone(), stop.clone(), events.clone());
        threads.push(std::thread::spawn(move || {
            sqs_poller(admin, source, dataset, stop, events)
        }));
    }
    seed_gallery(&admin, &bucket);

    // The api binary, as Lambda runs it: a cleared environment, Lambda's variables, the role's
    // credentials, the template's environment (the key a test value instead of the Secrets
    // Manager reference), and what its container image sets (models, ONNX Runtime).
    let log_offset = deployment.moto().log_text().len();
    let calls_before: BTreeMap<&str, usize> = ["IngestFunction", "DatasetFunction"]
        .into_iter()
        .map(|f| (f, deployment.calls(f).len()))
        .collect();
    let key = format!("browser-aws-key-{}", std::process::id());
    let timeout = Duration::from_secs(
        deployment
            .function_property("ApiFunction", "timeout")
            .as_u64()
            .expect("the api's timeout"),
    );
    let memory = deployment
        .function_property("ApiFunction", "memory")
        .as_u64()
        .expect("the api's memory");
    let name = deployment.spec()["functions"]["ApiFunction"]["name"]
        .as_str()
        .expect("the api's name")
        .to_string();
    let name = name.as_str();
    let (access_key, secret, token) = deployment.credentials("ApiFunction");
    let mut environment = deployment.environment("ApiFunction");
    assert!(
        environment
            .get("TWIN_API_KEY")
            .is_some_and(|k| k.contains("{{resolve:secretsmanager:")),
        "the template gives the api its key from Secrets Manager"
    );
    environment.insert("TWIN_API_KEY".into(), key.clone());
    let function = Arc::new(LambdaFunction::start(
        &function_arn(name),
        timeout,
        READY_LIMIT,
        |runtime| {
            let mut cmd = lambda_command(api_binary, runtime, name, memory);
            cmd.env("AWS_ACCESS_KEY_ID", &access_key)
                .env("AWS_SECRET_ACCESS_KEY", &secret)
                .env("AWS_SESSION_TOKEN", &token)
                .env("AWS_ENDPOINT_URL", deployment.moto().endpoint())
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .envs(&environment)
                .env("TWIN_MODELS_DIR", &models)
                .env(
                    "TWIN_BACKBONE",
                    models.join(twin_core::paths::BACKBONE_FILE),
                )
                .env("ORT_DYLIB_PATH", &ort);
            cmd
        },
    ));
    let init = function
        .wait_ready(READY_LIMIT)
        .unwrap_or_else(|e| panic!("{e}"));
    println!("api ready (init {:.1} s)", init.as_secs_f64());
    let routes = template_routes(&PARAMS);
    println!(
        "HTTP API routes: {}",
        routes
            .iter()
            .map(|r| r.key())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let gateway = HttpApi::serve(listener, routes, function.clone());
    assert_eq!(gateway.origin(), origin);

    // The seeded gallery is committed before the browser starts.
    let seeded: Vec<String> = SEED.iter().map(|p| p.to_ascii_lowercase()).collect();
    let waited = Instant::now();
    loop {
        let page: Value = ureq::get(&format!("{origin}/v1/identities?limit=48"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null);
        let have: Vec<&str> = page["identities"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["slug"].as_str())
            .collect();
        if seeded.iter().all(|s| have.contains(&s.as_str())) {
            println!(
                "gallery seeded through uploads/ in {:.1} s: {have:?}",
                waited.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(
            events.failures.lock().unwrap().is_empty() && waited.elapsed() < SEED_LIMIT,
            "the seeded gallery was not committed within {SEED_LIMIT:?} (have {have:?}); events failed: {:?}",
            events.failures.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // A path the router serves but the template does not route is the gateway's 404.
    let (status, body) = {
        let mut r = ureq::put(&format!("{origin}{NOT_ROUTED}"))
            .config()
            .http_status_as_error(false)
            .build()
            .send_empty()
            .expect("the gateway answers");
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    assert_eq!(
        (status, body.as_str()),
        (404, r#"{"message":"Not Found"}"#),
        "PUT {NOT_ROUTED} is not a route of the template"
    );

    // The hostile photo (50 Mpx, no face) within the memory the template gives the function:
    // the emulator stops a function that goes over it, as Lambda does.
    let before_mb = function.peak_rss_mb().expect("the api runs");
    let (status, body) = {
        let mut r = ureq::post(&format!("{origin}/v1/match"))
            .config()
            .http_status_as_error(false)
            .build()
            .header("content-type", "image/jpeg")
            .send(&twin_tests::resources::hostile_jpeg()[..])
            .expect("the gateway answers");
        (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    let peak_mb = function.peak_rss_mb().expect("the api runs");
    println!(
        "a 12000×4166 photo through the gateway: {status}; the api's peak RSS {peak_mb:.0} MB (before {before_mb:.0} MB) of its {memory} MB"
    );
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("no_face"), "{body}");

    // The browser.
    let mut child = Command::new("node")
        .arg("twin_page_aws.mjs")
        .current_dir(&browser_dir)
        .env("TWIN_URL", format!("{origin}/"))
        .env("TWIN_API_KEY", &key)
        .env("TWIN_BUCKET_ORIGIN", deployment.moto().endpoint())
        .env("TWIN_BUCKET", &bucket)
        .env("TWIN_SEEDED", seeded.join(","))
        .env("TWIN_SEED_PHOTO", SEED_MATCH)
        .env("TWIN_MEDIA", &media)
        .env("TWIN_SCREENSHOTS", &screenshots)
        .env(
            "TWIN_MATCH_WAIT_S",
            (3 * environment["TWIN_MODEL_POLL_SECONDS"]
                .parse::<u64>()
                .expect("a poll interval")
                + 10)
                .to_string(),
        )
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .spawn()
        .expect("node runs");
    let browser_started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if browser_started.elapsed() > BROWSER_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("an event thread panicked");
    }
    let browser_s = browser_started.elapsed().as_secs_f64();

    // What happened, printed before any check fails.
    let access = gateway.access_log();
    println!("\nHTTP API access log ({} requests):", access.len());
    for a in &access {
        println!("  {a}");
    }
    let moto_log = deployment.moto().log_text();
    let lines = moto_lines(&moto_log);
    let bucket_path = format!("/{bucket}");
    let is_s3 = |l: &MotoLine| {
        l.target == bucket_path
            || l.target.starts_with(&format!("{bucket_path}/"))
            || l.target.starts_with(&format!("{bucket_path}?"))
    };
    let split = |l: &MotoLine| -> (String, String) {
        let (path, query) = l.target.split_once('?').unwrap_or((&l.target, ""));
        let key = path
            .strip_prefix(&bucket_path)
            .unwrap_or("")
            .trim_start_matches('/');
        (twin_tests::percent_decode(key), query.to_string())
    };
    // The api's S3 requests: moto's lines since it started, less the browser's (presigned or
    // preflight) and the in-process functions' recorded calls made meanwhile.
    let mut others: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (f, from) in &calls_before {
        for c in deployment.calls(f).into_iter().skip(*from) {
            if c.service == "s3" {
                *others
                    .entry((operation_method(&c.operation).to_string(), c.target.clone()))
                    .or_default() += 1;
            }
        }
    }
    let after_start = moto_lines(&moto_log[log_offset.min(moto_log.len())..]);
    let mut api_calls: BTreeMap<String, (usize, BTreeMap<u16, usize>)> = BTreeMap::new();
    let mut browser_calls = Vec::new();
    for l in after_start.iter().filter(|l| is_s3(l)) {
        let (key, query) = split(l);
        if l.method == "OPTIONS" || query.contains("X-Amz-Signature=") {
            browser_calls.push(format!("{} /{bucket}/{key} → {}", l.method, l.status));
            continue;
        }
        if let Some(n) = others
            .get_mut(&(l.method.clone(), key.clone()))
            .filter(|n| **n > 0)
        {
            *n -= 1;
            continue;
        }
        let e = api_calls
            .entry(s3_pattern(&l.method, &key, &query))
            .or_default();
        e.0 += 1;
        *e.1.entry(l.status).or_default() += 1;
    }
    println!("\nS3 requests by the api binary (moto's log less the in-process functions' calls):");
    for (pattern, (n, statuses)) in &api_calls {
        println!("  {pattern}: {n} {statuses:?}");
    }
    println!("S3 requests by the browser (moto's log): {browser_calls:?}");
    println!(
        "\nS3 and SQS calls of the in-process functions (IAM enforced):\n{}",
        deployment.report()
    );
    let api_logs = function.logs();
    println!(
        "api log lines: {}; browser {browser_s:.1} s; whole test {:.1} s",
        api_logs.text().lines().count(),
        started.elapsed().as_secs_f64()
    );

    // The checks.
    let status = status.unwrap_or_else(|| {
        panic!(
            "the browser script did not finish within {BROWSER_LIMIT:?}; the api's output:\n{}",
            api_logs.text()
        )
    });
    assert!(
        status.success(),
        "the browser test failed (see its output above; screenshots in {}); the api's output:\n{}",
        screenshots.display(),
        api_logs.text()
    );
    let failures = events.failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "events the functions failed on: {failures:#?}"
    );
    let gateway_errors: Vec<String> = access
        .iter()
        .filter(|a| a.gateway_error.is_some() || a.status >= 500)
        .filter(|a| a.target != NOT_ROUTED)
        .map(|a| a.to_string())
        .collect();
    assert!(
        gateway_errors.is_empty(),
        "answers the gateway made itself (no route, a failed invocation):\n{}",
        gateway_errors.join("\n")
    );
    let refused: Vec<&str> = lines
        .iter()
        .filter(|l| l.status == 403 || l.status >= 500)
        .map(|l| l.line.as_str())
        .collect();
    assert!(
        refused.is_empty(),
        "moto answered 403 or 5xx (a call outside a role, a refused presigned PUT or preflight):\n{}",
        refused.join("\n")
    );
    let upload = format!("/{bucket}/uploads/ada_lovelace/");
    let reached = |method: &str| {
        browser_calls
            .iter()
            .any(|c| c.starts_with(&format!("{method} {upload}")) && c.ends_with("→ 200"))
    };
    assert!(
        reached("OPTIONS"),
        "the browser's CORS preflight of the upload reached the bucket and was allowed: {browser_calls:?}"
    );
    assert!(
        reached("PUT"),
        "the presigned PUT reached the bucket: {browser_calls:?}"
    );
    let errors = api_logs.errors();
    assert!(
        errors.is_empty(),
        "the api logged errors:\n{}",
        errors.join("\n")
    );
    deployment.assert_no_denials();
    for prefix in ["uploads/ada_lovelace/", "crops/ada_lovelace/"] {
        let left = keys_under(&admin, &bucket, prefix);
        assert!(left.is_empty(), "left after the erasure: {left:?}");
    }
    for person in &seeded {
        assert!(
            !keys_under(&admin, &bucket, &format!("crops/{person}/")).is_empty(),
            "the seeded {person} has crops"
        );
    }
}
